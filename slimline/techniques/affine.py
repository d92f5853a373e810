"""Linear (affine) quantization, written out: real = scale * (quantized - zero_point).

ONNX Runtime does the real quantization; this small, explicit version exists to report
per-tensor quantization error in the log and to check (in tests) that ORT chose the scales
the textbook formulas give:

* asymmetric uint8 (activations): the range [min, max] is widened to include 0 (so zero padding
  and ReLU's zeros are exact), scale = (max - min) / 255, zero_point = round(-min / scale);
* symmetric int8 (weights): scale = max|x| / 127 over [-127, 127], zero_point = 0; with
  `reduce_range` the weights use 7 bits ([-64, 64], scale = max|x| / 64), which keeps u8s8
  products from saturating int16 accumulators on CPUs without VNNI.

Per-channel variants compute one scale per slice along `axis` (the output channel of a weight).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuantParams:
    scale: np.ndarray        # float32, scalar or one per channel
    zero_point: np.ndarray   # same shape as scale
    qmin: int
    qmax: int
    axis: int | None = None  # None: per-tensor

    def _broadcast(self, values: np.ndarray, ndim: int) -> np.ndarray:
        if self.axis is None:
            return values
        shape = [1] * ndim
        shape[self.axis] = -1
        return values.reshape(shape)


def _reduce(x: np.ndarray, axis: int | None, fn) -> np.ndarray:
    if axis is None:
        return np.asarray(fn(x))
    others = tuple(i for i in range(x.ndim) if i != axis)
    return fn(x, axis=others)


def asymmetric_uint8(x: np.ndarray, axis: int | None = None, *, low: float | None = None,
                     high: float | None = None) -> QuantParams:
    """uint8 with a zero point; `low`/`high` override the observed range (e.g. a calibrated one)."""
    x = np.asarray(x, dtype=np.float32)
    rmin = (
        np.asarray(low, np.float64)
        if low is not None
        else _reduce(x, axis, np.min).astype(np.float64)
    )
    rmax = (
        np.asarray(high, np.float64)
        if high is not None
        else _reduce(x, axis, np.max).astype(np.float64)
    )
    rmin, rmax = np.minimum(rmin, 0.0), np.maximum(rmax, 0.0)
    scale = (rmax - rmin) / 255.0
    degenerate = scale <= np.finfo(np.float32).tiny   # an all-zero tensor: any scale is exact
    safe_scale = np.where(degenerate, 1.0, scale)
    zero_point = np.where(degenerate, 0, np.clip(np.round(-rmin / safe_scale), 0, 255))
    return QuantParams(safe_scale.astype(np.float32), zero_point.astype(np.uint8), 0, 255, axis)


def symmetric_int8(
    x: np.ndarray, axis: int | None = None, *, reduce_range: bool = False
) -> QuantParams:
    """int8 without a zero point, range [-127, 127] (or [-64, 64] with `reduce_range`)."""
    x = np.asarray(x, dtype=np.float32)
    bound = 64 if reduce_range else 127
    absmax = _reduce(np.abs(x), axis, np.max).astype(np.float64)
    scale = 2.0 * absmax / (2 * bound)
    scale = np.where(scale <= np.finfo(np.float32).tiny, 1.0, scale)
    return QuantParams(
        scale.astype(np.float32), np.zeros(scale.shape, np.int8), -bound, bound, axis
    )


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    scale = params._broadcast(params.scale, x.ndim)
    zero_point = params._broadcast(params.zero_point.astype(np.int32), x.ndim)
    # round half to even, as ONNX QuantizeLinear does
    q = np.round(np.asarray(x, np.float32) / scale) + zero_point
    return np.clip(q, params.qmin, params.qmax).astype(params.zero_point.dtype)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    scale = params._broadcast(params.scale, q.ndim)
    zero_point = params._broadcast(params.zero_point.astype(np.int32), q.ndim)
    return ((q.astype(np.int32) - zero_point) * scale).astype(np.float32)


@dataclass(frozen=True)
class QuantError:
    max_abs: float      # largest |x - dequantize(quantize(x))|
    rmse: float
    sqnr_db: float      # signal-to-quantization-noise ratio; ~6 dB per bit on well-spread data


def quantization_error(x: np.ndarray, params: QuantParams) -> QuantError:
    x = np.asarray(x, np.float32)
    noise = x - dequantize(quantize(x, params), params)
    power, noise_power = (
        float(np.mean(x.astype(np.float64) ** 2)),
        float(np.mean(noise.astype(np.float64) ** 2)),
    )
    sqnr = float("inf") if noise_power == 0 else 10 * np.log10(max(power, 1e-30) / noise_power)
    return QuantError(float(np.abs(noise).max()), float(np.sqrt(noise_power)), sqnr)
