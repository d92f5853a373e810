"""Slimline: a nightly model-compression line (prune, decompose, distill, quantize, evaluate)."""

__version__ = "0.1.0"
