"""quantize: the explicit scale/zero-point math, ORT agreeing with it, the CPU-driven choice of
settings, and the real stage on a tiny teacher (accuracy, determinism, bad input)."""
from __future__ import annotations

import numpy as np
import pytest

from slimline.config.params import QuantizeParams
from slimline.techniques.affine import (
    asymmetric_uint8,
    dequantize,
    quantization_error,
    quantize,
    symmetric_int8,
)
from slimline.techniques.quantize import choose_int8_target, cpu_int8_features

# ----------------------------------------------------------------------------- the math

def test_asymmetric_uint8_on_a_known_tensor():
    x = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    params = asymmetric_uint8(x)
    assert params.scale == pytest.approx(3.0 / 255)
    assert params.zero_point == 85                      # round(1 / (3/255)) = 85
    q = quantize(x, params)
    # 0.5 / scale = 42.5 rounds half to even (42), as ONNX QuantizeLinear does
    assert q.dtype == np.uint8 and q.tolist() == [0, 85, 127, 255]
    assert np.abs(dequantize(q, params) - x).max() <= params.scale / 2 + 1e-7


def test_asymmetric_range_always_contains_zero():
    params = asymmetric_uint8(np.array([1.0, 2.0], np.float32))   # widened to [0, 2]
    assert params.zero_point == 0 and params.scale == pytest.approx(2.0 / 255)
    assert dequantize(quantize(np.zeros(1, np.float32), params), params)[0] == 0.0


def test_symmetric_int8_per_channel_and_reduced_range():
    weight = np.array([[-2.0, 1.0], [0.5, -0.25]], np.float32)
    params = symmetric_int8(weight, axis=0)
    np.testing.assert_allclose(params.scale, [2 / 127, 0.5 / 127], rtol=1e-6)
    assert params.zero_point.tolist() == [0, 0]
    assert quantize(weight, params).tolist() == [[-127, 64], [127, -64]]
    reduced = symmetric_int8(weight, axis=0, reduce_range=True)
    np.testing.assert_allclose(reduced.scale, [2 / 64, 0.5 / 64], rtol=1e-6)
    assert quantize(weight, reduced).min() >= -64
    # 8 bits are ~6 dB better than 7 on the same tensor
    rng = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    gap = quantization_error(rng, symmetric_int8(rng, 0)).sqnr_db - \
        quantization_error(rng, symmetric_int8(rng, 0, reduce_range=True)).sqnr_db
    assert 4 < gap < 8


def test_all_zero_tensor_quantizes_exactly():
    zeros = np.zeros((3, 3), np.float32)
    for params in (asymmetric_uint8(zeros), symmetric_int8(zeros)):
        assert quantization_error(zeros, params).max_abs == 0.0


# ----------------------------------------------------------------------------- CPU choice

AVX2_ONLY = "processor: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
VNNI = "flags\t\t: avx2 avx512f avx512bw avx512_vnni amx_tile amx_int8\n"


def test_cpu_flags_are_read_from_cpuinfo():
    assert cpu_int8_features(AVX2_ONLY) == {"avx2"}
    assert {"avx512_vnni", "amx_int8"} <= cpu_int8_features(VNNI)


def test_defaults_land_on_the_fast_path():
    auto = QuantizeParams()
    no_vnni = choose_int8_target(auto, cpu_int8_features(AVX2_ONLY), machine="x86_64")
    assert (no_vnni.activation_type, no_vnni.reduce_range) == ("uint8", True)
    vnni = choose_int8_target(auto, cpu_int8_features(VNNI), machine="x86_64")
    assert (vnni.activation_type, vnni.reduce_range) == ("uint8", False)
    arm = choose_int8_target(auto, set(), machine="aarch64")
    assert arm.activation_type == "int8"
    forced = choose_int8_target(
        QuantizeParams(activation_type="int8", reduce_range=False), set(), "x86_64"
    )
    assert (forced.activation_type, forced.reduce_range) == ("int8", False)
