"""The quantization schemes, in one table: params.yaml's choices (quantize.scheme), the precision
the quantized artifact's recipe records, what each needs, and which the search tries.

    static            int8 QDQ, activations calibrated on the calibration split (the default); a
                      transformer falls back to dynamic where static measures less faithful
    dynamic           int8 weights, activations quantized per call: MatMul/Gemm (dynamic int8
                      convolutions ran 0.13-0.23x of fp32), and for a transformer every
                      weight-heavy op: the embedding Gathers and, after fusion, Attention;
                      per channel; 7-bit weights only where measured more faithful
    weight_only_4bit  4-bit block-wise weights (MatMulNBits; a transformer's embedding tables as
                      GatherBlockQuantized): the smallest, not the fastest (0.86-0.94x of fp32
                      at batch 1 on AVX2)
    qat               fake-quant fine-tuning in torch, then static QDQ
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Scheme:
    name: str
    precision: str          # recipe.precision of the quantized artifact
    calibrated: bool        # reads the calibration split's activation ranges
    needs_torch: bool       # fine-tunes a torch model (an ONNX-only model cannot)
    searched: bool          # the joint search (slimline/search.py) tries it
    matmul_only: bool       # leaves convolutions alone: worth it on MatMul-heavy models


SCHEMES = {scheme.name: scheme for scheme in (
    Scheme("static", "int8-static-qdq", calibrated=True, needs_torch=False, searched=True,
           matmul_only=False),
    Scheme("dynamic", "int8-dynamic", calibrated=False, needs_torch=False, searched=True,
           matmul_only=True),
    Scheme("weight_only_4bit", "int4-weight-only", calibrated=False, needs_torch=False,
           searched=False, matmul_only=True),
    Scheme("qat", "int8-qat-qdq", calibrated=True, needs_torch=True, searched=False,
           matmul_only=False),
)}
SchemeName = Literal[tuple(SCHEMES)]   # params.yaml's quantize.scheme: one of the table's names
