"""Measurement of the model that ships, in the runtime that ships it (ONNX Runtime, CPU):
sessions (runtime.py), interleaved timing (latency.py; torch modules through an ONNX export,
module_latency.py), graph size, parameters and MACs (graph.py), two models side by side
(comparison.py), every artifact of a night (evaluation.py), paired statistics (stats.py),
embedding fidelity (embedding.py) and where every number came from (lineage.py)."""
