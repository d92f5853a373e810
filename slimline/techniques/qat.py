"""Quantization-aware training: fine-tune with fake int8 in the forward pass, ship as QDQ.

For when post-training quantization loses more than the allowed drop. The model learns weights
that survive rounding:

1. BatchNorm is folded into the preceding convolutions first (torch.fx), because ORT quantizes
   the folded weights; fake-quantizing unfolded ones would train for the wrong grid.
2. Every Conv/Linear weight is fake-quantized with the same formula ORT uses (symmetric int8,
   per channel, 7-bit under reduce_range), recomputed each step; every Conv/Linear input is
   fake-quantized with the uint8 range calibrated on the calibration split. Gradients pass
   through the rounding (straight-through estimator, built into torch's fake_quantize ops).
3. After fine-tuning the weights are baked onto the grid, so ORT's static QDQ quantization of
   the exported graph (slimline.quantize) reproduces them exactly.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimline.config.params import QuantizeParams
from slimline.data.splits import Inputs, Split
from slimline.errors import SlimlineError
from slimline.techniques.affine import asymmetric_uint8
from slimline.techniques.quantize import Int8Target
from slimline.training.loop import fit, predict, seed_everything

QUANTIZED_LAYERS = (nn.Conv2d, nn.Linear)


class FakeQuantWeight(nn.Module):
    """Symmetric int8 fake quantization of a weight, one scale per output channel."""

    def __init__(self, bound: int, per_channel: bool):
        super().__init__()
        self.bound, self.per_channel = bound, per_channel

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            absmax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
            scale = (absmax / self.bound).float()
            zero = torch.zeros_like(scale, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(
                weight, scale, zero, 0, -self.bound, self.bound
            )
        scale = float(weight.detach().abs().max().clamp_min(1e-12)) / self.bound
        return torch.fake_quantize_per_tensor_affine(weight, scale, 0, -self.bound, self.bound)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model).eval())
    except Exception as exc:  # torch.fx raises many types on untraceable code
        raise SlimlineError(f"qat: cannot fold BatchNorm, the model is not fx-traceable "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None


def _input_ranges(model: nn.Module, layers: dict[str, nn.Module], inputs: Inputs) -> dict:
    low, high, handles = {}, {}, []
    for name, layer in layers.items():
        def record(module, inputs, name=name):
            x = inputs[0].detach()
            low[name] = min(low.get(name, np.inf), float(x.min()))
            high[name] = max(high.get(name, -np.inf), float(x.max()))
        handles.append(layer.register_forward_pre_hook(record))
    predict(model, inputs, batch_size=64)
    for handle in handles:
        handle.remove()
    return {name: asymmetric_uint8(np.zeros(1), low=low[name], high=high[name]) for name in layers}


def quantization_aware_training(model: nn.Module, train: Split, calibration: Split,
                                config: QuantizeParams, target: Int8Target, *, seed: int,
                                log=print) -> nn.Module:
    """A BN-folded copy of `model`, fine-tuned under fake int8, weights left on the int8 grid."""
    if len(calibration) == 0:
        raise SlimlineError("calibration split is empty: QAT needs it for activation ranges")
    folded = fold_batchnorm(model)
    layers = {
        name: module
        for name, module in folded.named_modules()
        if isinstance(module, QUANTIZED_LAYERS)
    }
    ranges = _input_ranges(folded, layers, calibration.inputs)
    shift = 128 if target.activation_type == "int8" else 0   # same grid, signed storage
    handles = []
    for name, layer in layers.items():
        scale, zero_point = float(ranges[name].scale), int(ranges[name].zero_point) - shift

        def fake_quant_input(module, inputs, scale=scale, zero_point=zero_point):
            return (torch.fake_quantize_per_tensor_affine(inputs[0], scale, zero_point,
                                                          -shift, 255 - shift),)
        handles.append(layer.register_forward_pre_hook(fake_quant_input))
        parametrize.register_parametrization(
            layer, "weight", FakeQuantWeight(64 if target.reduce_range else 127, config.per_channel)
        )
    log(f"qat: BatchNorm folded, {len(layers)} Conv/Linear layers fake-quantized "
        f"({target.activation_type} inputs, {'7' if target.reduce_range else '8'}-bit weights)")
    seed_everything(seed)
    fit(folded, train, config.qat, seed=seed, description="qat", log=log)
    for handle in handles:
        handle.remove()
    for layer in layers.values():
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return folded.eval()
