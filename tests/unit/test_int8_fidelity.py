"""Static int8 on a depthwise network whose channel ranges spread over orders of magnitude
(MobileNetV2's known failure): naive int8 fails, cross-layer equalization and bias correction
(slimline/techniques/int8_fidelity.py) bring it back, each measured against fp32."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from slimline.config.params import QuantizeParams
from slimline.data.splits import Split
from slimline.measure.runtime import make_session
from slimline.techniques.equalize import equalization_pairs, equalize
from slimline.techniques.layer_error import layer_errors
from slimline.techniques.quantize import choose_int8_target, quantize_model

CHANNELS = 16


def spread_depthwise_block(seed: int = 0) -> nn.Module:
    """stem -> ReLU -> depthwise -> ReLU -> pointwise -> pool -> classifier, where depthwise
    channel i is scaled by 10^(-3..1) and the pointwise conv undoes it (ReLU is scale-
    equivariant): the fp32 function is a balanced network's, its per-tensor int8 is not."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, CHANNELS, 3, padding=1), nn.ReLU(),
        nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, groups=CHANNELS), nn.ReLU(),
        nn.Conv2d(CHANNELS, 32, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    scale = torch.logspace(-3, 1, CHANNELS)
    with torch.no_grad():
        model[2].weight.mul_(scale.view(-1, 1, 1, 1))
        model[2].bias.mul_(scale)
        model[4].weight.div_(scale.view(1, -1, 1, 1))
    return model.eval()


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    from slimline.artifact.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("spread") / "model.onnx"
    images = np.random.default_rng(0).normal(size=(96, 3, 12, 12)).astype(np.float32)
    export_onnx(spread_depthwise_block(), torch.from_numpy(images[:2]), path, output_name="logits")
    names = [value.name for value in onnx.load(str(path)).graph.input]
    calibration = Split({names[0]: images[:64]}, np.zeros(64, np.int64))
    return onnx.load(str(path)), calibration, {names[0]: images[64:]}


def fidelity(reference: onnx.ModelProto, candidate: onnx.ModelProto, inputs, tmp_path):
    """(output SQNR in dB, top-1 agreement) of `candidate` against `reference` on `inputs`."""
    outputs = []
    for name, model in (("fp32", reference), ("int8", candidate)):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        outputs.append(make_session(tmp_path / f"{name}.onnx").run(None, inputs)[0])
    sqnr = 10 * np.log10(np.square(outputs[0]).sum() / np.square(outputs[1] - outputs[0]).sum())
    return float(sqnr), float((outputs[0].argmax(1) == outputs[1].argmax(1)).mean())


def quantized(model, calibration, **fidelity):
    config = QuantizeParams(**fidelity)
    target = choose_int8_target(config, {"avx512_vnni"}, machine="x86_64")
    return quantize_model(model, calibration, config, target, log=lambda line: None)


def test_equalization_is_exact_in_fp32_and_evens_the_depthwise_ranges(spread, tmp_path):
    model, _, held_out = spread
    equalized, report = equalize(model, replace_relu6=False)
    assert len(report.pairs) == 2 and report.relu6_replaced == 0   # stem->dw, dw->pw
    assert report.spread_before > 100 > 10 > report.spread_after
    assert fidelity(model, equalized, held_out, tmp_path)[0] > 90   # the same function


@pytest.mark.parametrize("per_channel", [False, True])
def test_naive_int8_fails_and_equalization_brings_it_back(spread, tmp_path, per_channel):
    model, calibration, held_out = spread
    naive, _ = quantized(model, calibration, per_channel=per_channel, equalize="off",
                         bias_correction="off")
    fixed, report = quantized(model, calibration, per_channel=per_channel, equalize="auto",
                              bias_correction="off")
    (naive_db, naive_agreement), (fixed_db, fixed_agreement) = (
        fidelity(model, naive, held_out, tmp_path), fidelity(model, fixed, held_out, tmp_path))
    # the small depthwise channels round to nothing: per-tensor weights lose them outright,
    # per-channel weights still lose them in the per-tensor activation range after them
    assert naive_db < (10 if not per_channel else 20), naive_db
    assert fixed_db > naive_db + 25, (naive_db, fixed_db)
    assert fixed_agreement == 1.0 and fixed_agreement >= naive_agreement
    if not per_channel:
        assert naive_agreement < 0.5
    assert report.settings["equalized"] and "bias_corrected" not in report.settings


def test_bias_correction_cancels_the_mean_shift_it_measures(spread, tmp_path):
    model, calibration, held_out = spread
    naive, _ = quantized(model, calibration, equalize="off", bias_correction="off")
    corrected, report = quantized(model, calibration, equalize="off", bias_correction="on")
    assert report.settings["bias_corrected"]
    before = {row.name: np.abs(row.mean_shift).mean() for row in layer_errors(model, naive,
                                                                               calibration.inputs)}
    after = {row.name: np.abs(row.mean_shift).mean() for row in report.layers}
    assert sum(after.values()) < 0.5 * sum(before.values()), (before, after)
    assert fidelity(model, corrected, held_out, tmp_path)[0] > \
        fidelity(model, naive, held_out, tmp_path)[0] + 10


def test_relu6_pairs_are_equalized_only_the_aimet_way():
    """ReLU6 is not scale-equivariant: exact equalization passes it by; AIMET's way turns it
    into ReLU first (a different fp32 function, measured by the caller before it is kept)."""
    from slimline.models.mobilenet import MobileNet
    from slimline.techniques.quantize import prepare_for_quantization

    mobilenet = MobileNet(widths=(8, 16), blocks_per_stage=1).eval()
    exported = torch.onnx.export(mobilenet, torch.zeros(1, 3, 16, 16), dynamo=True).model_proto
    prepared = prepare_for_quantization(exported)
    clips = sum(node.op_type == "Clip" for node in prepared.graph.node)
    exact = equalization_pairs(prepared, through_relu6=False)
    assert all(activation is None or activation.op_type == "Relu"
               for _, _, activation in exact)
    aimet, report = equalize(prepared, replace_relu6=True)
    assert len(report.pairs) > len(exact) and report.relu6_replaced > 0
    assert sum(node.op_type == "Clip" for node in aimet.graph.node) == \
        clips - report.relu6_replaced


def test_the_layers_left_in_fp32_add_the_most_error_within_the_macs_budget(spread):
    from slimline.measure.graph import macs_by_node
    from slimline.techniques.int8_fidelity import sensitive_layers

    model, calibration, _ = spread
    naive, report = quantized(model, calibration, equalize="off", bias_correction="off",
                              fp32_layers=0)
    assert "fp32_layers" not in report.settings and "fidelity_fp32_layers" not in report.settings
    macs = {name: count for name, (_, count) in macs_by_node(model, calibration.inputs).items()}
    ranked = sorted(report.layers, key=lambda row: row.own_sqnr_db)
    share = macs[ranked[0].name] / sum(macs.values())
    assert sensitive_layers(model, report.layers,
                            QuantizeParams(fp32_max_macs_share=share, fp32_layers=1),
                            calibration.inputs) == (ranked[0].name,)
    # a budget below the worst layer's share passes it by for the next one that fits
    chosen = sensitive_layers(model, report.layers,
                              QuantizeParams(fp32_max_macs_share=share * 0.99, fp32_layers=1),
                              calibration.inputs)
    assert ranked[0].name not in chosen and all(macs[name] <= share * 0.99 * sum(macs.values())
                                                for name in chosen)
