"""Architectures the line can build from a recipe: a builtin name, or a user factory given as
an import path "package.module:function" (its keyword arguments are the recipe's arguments)."""
from __future__ import annotations

from torch import nn

from slimline.errors import SlimlineError
from slimline.models.efficientnet_lite import EfficientNetLite
from slimline.models.huggingface import build_text_model
from slimline.models.mobilenet import MobileNet
from slimline.models.resnet import ResNetDigits

ARCHITECTURES = {
    "resnet_digits": ResNetDigits,
    "huggingface": build_text_model,   # a transformer rebuilt from the config in its recipe
    "mobilenet": MobileNet,
    "efficientnet_lite": EfficientNetLite,   # Google's mobile classifier, ImageNet weights pinned
}


def is_factory(name: str) -> bool:
    return ":" in name


def build_model(name: str, **kwargs) -> nn.Module:
    if is_factory(name):
        from slimline.config.user_code import call

        model = call(name, "model.factory", kwargs)
        if not isinstance(model, nn.Module):
            raise SlimlineError(f"model.factory = {name!r} returned {type(model).__name__}, "
                                "not a torch.nn.Module")
        return model
    if name not in ARCHITECTURES:
        raise SlimlineError(f"unknown architecture '{name}' (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name](**kwargs)
