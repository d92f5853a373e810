"""Pretrained families: what the rest of the line asks a family (its input size and
normalisation), so nothing downstream hard-codes a model's preprocessing. EfficientNet-Lite is
the family with published weights today (slimline/models/efficientnet_lite.py)."""
from __future__ import annotations

from slimline.config.params import ModelParams, PreprocessParams


def with_family_preprocess(preprocess: PreprocessParams, config: ModelParams) -> PreprocessParams:
    """A pretrained family's input size and normalisation, where params leave them null: the
    family knows how its weights were trained."""
    if not config.pretrained:
        return preprocess
    from slimline.models.efficientnet_lite import MEAN, STD, VARIANTS

    channels = preprocess.channels
    defaults = {"size": [VARIANTS[config.variant].resolution] * 2,
                "mean": MEAN[:channels], "std": STD[:channels]}
    return preprocess.model_copy(update={key: value for key, value in defaults.items()
                                         if getattr(preprocess, key) is None})
