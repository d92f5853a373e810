"""A small MobileNetV2-style network: the line's second, different architecture.

Inverted residual blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection) are what
phones and smart cameras run. They stress the line where the ResNet does not: a depthwise
convolution (groups = channels) must lose exactly the channels its expand conv loses, and its
weights are already too cheap per channel to factorize.
"""
from __future__ import annotations

from torch import nn


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             activation: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(out_channels)]
    return layers + [nn.ReLU6()] if activation else layers


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.block = nn.Sequential(
            *_conv_bn(in_channels, hidden, 1),                        # expand
            *_conv_bn(hidden, hidden, 3, stride, groups=hidden),      # depthwise
            *_conv_bn(hidden, out_channels, 1, activation=False),     # linear bottleneck
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class MobileNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10,
                 widths: tuple[int, ...] = (16, 24, 32), blocks_per_stage: int = 2,
                 expansion: int = 4):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0], 3))
        blocks, channels = [], widths[0]
        for index, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(InvertedResidual(channels, width, stride, expansion))
                channels = width
        self.layers = nn.Sequential(*blocks)  # `layers`: the blocks feature distillation taps
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))
