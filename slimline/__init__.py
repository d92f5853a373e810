"""Slimline: a nightly model-compression line (prune, decompose, distill, quantize, evaluate).

The folders are the layers, lowest first: config (params schema, profiles, paths), data (splits,
sources), models (architectures, the teacher), training (the loop), techniques (model in, model
and report out), artifact (recipe + safetensors + ONNX), measure (ONNX Runtime: latency, size,
quality, statistics), report (gate, Markdown, plots, trend) and nightly (Airflow, DVC and S3
orchestration). task.py decides once whether a model classifies or embeds; stage.py is the
contract every stages/<name>.py entry point follows; search.py varies the techniques jointly.
Techniques never import artifact, stage or nightly (tests/unit/test_layout.py holds that).
"""

__version__ = "0.1.0"
