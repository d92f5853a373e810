"""The one training loop: used to train the teacher and to fine-tune / distil every student.

It runs on the device slimline/training/device.py chose (a CUDA GPU when present), batches text
by length (each batch cut to its longest real sequence: the mean text is far shorter than
max_length), and writes a progress line to the stage log every PROGRESS_SECONDS, since tqdm's bar
goes to stderr, which the stage log does not keep. On a CUDA GPU text batches are sized by tokens
with the learning rate scaled (slimline/training/batching.py), and a set that fits
RESIDENT_INPUT_BYTES is copied to the GPU once, so no step waits on a host-to-device copy.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from slimline.config.params import TrainParams
from slimline.data.splits import DEFAULT_INPUT, Inputs, Split, as_inputs, batches
from slimline.training import device as training_device
from slimline.training.batching import scaled_learning_rate, token_batches

TensorInputs = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, TensorInputs, torch.Tensor], torch.Tensor]
MASK = "attention_mask"      # a text model's padding mask: batches are cut to their longest text
PROGRESS_SECONDS = 30.0      # a progress line in the stage log at most this often
RESIDENT_INPUT_BYTES = 1024 ** 3   # GPU: a training set up to this size lives on the device


def to_tensors(inputs: Inputs | np.ndarray) -> TensorInputs:
    return {name: torch.from_numpy(array) for name, array in as_inputs(inputs).items()}


def as_tensor_inputs(inputs: TensorInputs | torch.Tensor) -> TensorInputs:
    """Named tensors; a bare tensor is the one input of an image model, named "input"."""
    return {DEFAULT_INPUT: inputs} if isinstance(inputs, torch.Tensor) else inputs


def forward(model: nn.Module, inputs: TensorInputs) -> torch.Tensor:
    """The model on named inputs: passed positionally, in order (the ONNX input order)."""
    return model(*inputs.values())


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment(inputs: TensorInputs, max_shift: int, generator: torch.Generator) -> TensorInputs:
    """Random shifts of every image input (float, N x C x H x W); other inputs (token ids,
    masks, feature vectors) are left as they are."""
    if max_shift == 0:
        return inputs
    return {name: random_shift(tensor, max_shift, generator)
            if tensor.is_floating_point() and tensor.dim() == 4 else tensor
            for name, tensor in inputs.items()}


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero padding = background after crop)."""
    batch, channels, height, width = images.shape
    background = images.amin()
    padded = F.pad(images, [max_shift] * 4, value=float(background))
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :]
    return padded[
        torch.arange(batch)[:, None, None, None],
        torch.arange(channels)[None, :, None, None],
        rows,
        cols,
    ]


def cross_entropy(model: nn.Module, inputs: TensorInputs, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(forward(model, inputs), labels)


def make_optimizer(model: nn.Module, config: TrainParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
    return torch.optim.SGD(trainable, lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.momentum > 0)


def _bytes(inputs: TensorInputs) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in inputs.values())


def length_buckets(mask: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Example indices grouped by text length (sorted, then cut into batches), so a batch pads
    to its own longest text, not to max_length; the batches stay fixed and only their order is
    shuffled, so a loss may cache per-batch work (a teacher's outputs) across epochs."""
    order = torch.argsort(mask.sum(1), stable=True)
    return list(order.split(batch_size))


def trim_padding(inputs: TensorInputs) -> TensorInputs:
    """Drop the trailing sequence positions that are padding in every row of the batch (right
    padding: the real tokens keep their positions, so the outputs do not change)."""
    if MASK not in inputs or inputs[MASK].dim() != 2:
        return inputs
    used = torch.nonzero(inputs[MASK].any(0))
    length = int(used.max()) + 1 if len(used) else 1
    if length == inputs[MASK].shape[1]:
        return inputs
    return {name: tensor[:, :length] if tensor.dim() == 2 and tensor.shape[1] ==
            inputs[MASK].shape[1] else tensor for name, tensor in inputs.items()}


class Progress:
    """Progress lines for the stage log, at most every PROGRESS_SECONDS."""

    def __init__(self, description: str, total: int, log):
        self.description, self.total, self.log = description, total, log
        self.started = self.last = time.perf_counter()

    def step(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last < PROGRESS_SECONDS and done != self.total:
            return
        self.last, elapsed = now, now - self.started
        left = elapsed / done * (self.total - done)
        self.log(f"{self.description}: step {done}/{self.total} ({100 * done / self.total:.0f}%), "
                 f"loss {loss:.4f}, {elapsed:.0f} s elapsed, about {left:.0f} s left")


def fit(model: nn.Module, data: Split, config: TrainParams, *, seed: int,
        loss_fn: LossFn = cross_entropy, description: str = "train", log=print) -> list[float]:
    """SGD + Nesterov (or AdamW) with a one-cycle schedule, on the configured training device;
    returns the mean loss of each epoch. The model is back on the CPU afterwards."""
    if config.epochs == 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = to_tensors(data.inputs), torch.from_numpy(data.labels)
    where = training_device.current()
    # Length buckets only when the lengths differ: with one length they trim nothing and would
    # only fix the batches across epochs in place of a fresh shuffle each epoch.
    lengths = inputs[MASK].sum(1) if MASK in inputs and inputs[MASK].dim() == 2 else None
    buckets = (length_buckets(inputs[MASK], config.batch_size)
               if lengths is not None and int(lengths.min()) != int(lengths.max()) else None)
    if lengths is not None and where.tokens_per_batch:
        buckets = token_batches(lengths, where.tokens_per_batch, config.batch_size)
        average = len(labels) / len(buckets)
        config = config.model_copy(update={"learning_rate": scaled_learning_rate(
            config.learning_rate, config.optimizer, config.batch_size, average)})
        log(f"{description}: {len(buckets)} batches of up to {where.tokens_per_batch:,} tokens "
            f"on the GPU, {average:.0f} texts on average (batch_size {config.batch_size}): "
            f"peak learning rate {config.learning_rate:.3g}")
    if where.is_gpu and config.max_shift == 0 and _bytes(inputs) <= RESIDENT_INPUT_BYTES:
        # The whole set on the GPU once: a step slices it there, no host copy on its path.
        inputs = {name: tensor.to(where.device) for name, tensor in inputs.items()}
        labels = labels.to(where.device)
    steps_per_epoch = len(buckets) if buckets is not None else -(-len(labels) // config.batch_size)
    training_device.place(model)
    optimizer = make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    history = []
    progress = Progress(description, config.epochs * steps_per_epoch, log)
    for epoch in range(config.epochs):
        model.train()
        if buckets is None:
            order = torch.randperm(len(labels), generator=generator)
            chosen = [order[step * config.batch_size:(step + 1) * config.batch_size]
                      for step in range(steps_per_epoch)]
        else:
            chosen = [buckets[index] for index in torch.randperm(len(buckets),
                                                                 generator=generator)]
        total, bar = (
            0.0,
            tqdm(
                chosen,
                desc=f"{description} {epoch + 1}/{config.epochs}",
                unit="batch",
                leave=False,
                mininterval=1.0,
            ),
        )
        for step, batch in enumerate(bar):
            batch = batch.to(labels.device)
            batch_inputs = augment(trim_padding({name: tensor[batch]
                                                 for name, tensor in inputs.items()}),
                                   config.max_shift, generator)
            batch_inputs = {name: tensor.to(where.device) for name, tensor in batch_inputs.items()}
            with training_device.autocast():
                loss = loss_fn(model, batch_inputs, labels[batch].to(where.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            progress.step(epoch * steps_per_epoch + step + 1, total / (step + 1))
        history.append(total / steps_per_epoch)
        log(f"{description}: epoch {epoch + 1}/{config.epochs} mean loss {history[-1]:.4f}")
    model.eval().to("cpu")
    return history


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs | np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for `inputs`, in evaluation mode, on the training device (returned on the CPU)."""
    model.eval()
    where = training_device.current().device
    training_device.place(model)
    outputs = [forward(model, {name: tensor.to(where) for name, tensor in
                               to_tensors(batch).items()}).float().cpu().numpy()
               for batch in batches(as_inputs(inputs), batch_size)]
    model.to("cpu")
    return np.concatenate(outputs)


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data.inputs).argmax(1) == data.labels).mean())


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
