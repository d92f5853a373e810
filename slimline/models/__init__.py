"""Architectures the line can build from a recipe, by name."""
from __future__ import annotations

from torch import nn

from slimline.errors import SlimlineError
from slimline.models.huggingface import build_text_model
from slimline.models.resnet import ResNetDigits

ARCHITECTURES = {
    "resnet_digits": ResNetDigits,
    "huggingface": build_text_model,   # a transformer rebuilt from the config in its recipe
}


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in ARCHITECTURES:
        raise SlimlineError(f"unknown architecture '{name}' (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name](**kwargs)
