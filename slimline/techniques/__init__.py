"""The compression techniques, each a function on a model: config, model and data in; the same
model edited (or a new graph) and a report out. No paths, argparse, subprocesses or artifacts
here (the stages do that): prune.py and prune_transformer.py (dependency-aware structured pruning
with Torch-Pruning), decompose.py and lowrank.py (SVD / Tucker-2 / CP, kept where measured faster),
distill.py (knowledge distillation), quantize.py, qat.py and affine.py (ONNX Runtime int8 / 4-bit,
quantization-aware training, the affine arithmetic behind the error report)."""
