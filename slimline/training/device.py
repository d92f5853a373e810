"""Where training runs: the one place that chooses the device (params `training.device`).

    auto   a CUDA GPU when torch sees one, else the CPU
    cpu    the CPU, even where a GPU is present
    cuda   the GPU; a stage stops in one line when torch sees none

`configure` is called once per stage, before anything trains; `fit` and `predict`
(slimline/training/loop.py) and the losses that run a second model (a teacher, the reference
of a fine-tune) move their tensors there. Models leave training on the CPU again: export, ONNX
parity and every measurement stay on the CPU, the deployment runtime of record.

bf16 autocast (`training.bf16_autocast`) applies on CUDA only: on CPUs without bf16 units (AVX2,
no AMX) it measured 4-7x slower than fp32 for a 22 M-parameter encoder's training step, so a CPU
never uses it, whatever the knob says. Likewise text batches sized by tokens
(`training.gpu_tokens_per_batch`, slimline/training/batching.py) apply on CUDA only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from slimline.errors import SlimlineError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainingDevice:
    device: torch.device
    bf16: bool               # autocast to bfloat16 inside training steps (CUDA only)
    reason: str              # why this device, for the stage log
    tokens_per_batch: int | None = None   # text batches sized by tokens (CUDA only)

    @property
    def name(self) -> str:
        return self.device.type

    @property
    def is_gpu(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        tokens = (f", text batches of up to {self.tokens_per_batch:,} tokens"
                  if self.tokens_per_batch else "")
        return f"{self.name}{' (bf16 autocast)' if self.bf16 else ''}{tokens}: {self.reason}"


def resolve(choice: str = "auto", bf16_autocast: bool = False,
            cuda_available: bool | None = None,
            tokens_per_batch: int | None = None) -> TrainingDevice:
    """The device for `choice` (auto | cpu | cuda); one clear line when cuda is asked for and
    torch sees no GPU."""
    if choice not in DEVICES:
        raise SlimlineError(f"training.device = {choice!r} is not one of {', '.join(DEVICES)}")
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if choice == "cuda" and not available:
        raise SlimlineError("training.device = cuda but torch sees no CUDA GPU on this machine "
                            "(use auto to fall back to the CPU)")
    if choice == "cpu" or not available:
        reason = ("training.device = cpu" if choice == "cpu"
                  else "training.device = auto and no CUDA GPU visible")
        return TrainingDevice(torch.device("cpu"), False, reason)
    gpu = torch.cuda.get_device_name(0) if cuda_available is None else "CUDA GPU"
    return TrainingDevice(torch.device("cuda"), bool(bf16_autocast),
                          f"training.device = {choice}, {gpu}", tokens_per_batch)


_current = TrainingDevice(torch.device("cpu"), False, "default (not configured)")


def configure(choice: str = "auto", bf16_autocast: bool = False,
              tokens_per_batch: int | None = None) -> TrainingDevice:
    """Choose the device for this process's training (a stage calls this once)."""
    global _current
    _current = resolve(choice, bf16_autocast, tokens_per_batch=tokens_per_batch)
    return _current


def configure_from(training, log=print) -> TrainingDevice:
    """configure() from params' `training` section, with the choice in the stage log."""
    chosen = configure(training.device, training.bf16_autocast, training.gpu_tokens_per_batch)
    log(f"training device: {chosen.describe()}")
    return chosen


def current() -> TrainingDevice:
    return _current


def place(module: nn.Module) -> nn.Module:
    """`module` on the training device (in place, as nn.Module.to does)."""
    return module.to(_current.device)


def follow(module: nn.Module, tensor: torch.Tensor) -> nn.Module:
    """`module` on `tensor`'s device: a frozen second model (a teacher, a fine-tune's reference)
    that a loss runs beside the model in training, wherever fit() put the batch."""
    if next(module.parameters()).device != tensor.device:
        module.to(tensor.device)
    return module


def autocast():
    """bf16 autocast on CUDA when configured; a no-op context everywhere else."""
    if _current.bf16 and _current.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
