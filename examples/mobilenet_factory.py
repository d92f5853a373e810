"""A model factory, as a user writes one: a function returning a torch.nn.Module.

params.yaml names it `model.factory: examples.mobilenet_factory:build` and passes
`model.factory_args` as its keyword arguments. Any architecture works the same way; here it is
the project's MobileNet-style network (inverted residuals with depthwise convolutions).
"""
from torch import nn

from slimline.models.mobilenet import MobileNet


def build(num_classes: int, in_channels: int = 3, widths: list[int] = (16, 24, 32),
          blocks_per_stage: int = 2, expansion: int = 4) -> nn.Module:
    return MobileNet(in_channels=in_channels, num_classes=num_classes, widths=tuple(widths),
                     blocks_per_stage=blocks_per_stage, expansion=expansion)
