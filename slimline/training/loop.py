"""The one training loop: used to train the teacher and to fine-tune / distil every student."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from slimline.config.params import TrainParams
from slimline.data.splits import DEFAULT_INPUT, Inputs, Split, as_inputs, batches

TensorInputs = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, TensorInputs, torch.Tensor], torch.Tensor]


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


def fit(model: nn.Module, data: Split, config: TrainParams, *, seed: int,
        loss_fn: LossFn = cross_entropy, description: str = "train", log=print) -> list[float]:
    """SGD + Nesterov (or AdamW) with a one-cycle schedule; returns the mean loss of each epoch."""
    if config.epochs == 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = to_tensors(data.inputs), torch.from_numpy(data.labels)
    steps_per_epoch = -(-len(labels) // config.batch_size)
    optimizer = make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total, bar = (
            0.0,
            tqdm(
                range(steps_per_epoch),
                desc=f"{description} {epoch + 1}/{config.epochs}",
                unit="batch",
                leave=False,
                mininterval=1.0,
            ),
        )
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch_inputs = augment({name: tensor[batch] for name, tensor in inputs.items()},
                                   config.max_shift, generator)
            loss = loss_fn(model, batch_inputs, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        history.append(total / steps_per_epoch)
        log(f"{description}: epoch {epoch + 1}/{config.epochs} mean loss {history[-1]:.4f}")
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs | np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for `inputs`, in evaluation mode."""
    model.eval()
    outputs = [forward(model, to_tensors(batch)).numpy()
               for batch in batches(as_inputs(inputs), batch_size)]
    return np.concatenate(outputs)


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data.inputs).argmax(1) == data.labels).mean())


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
