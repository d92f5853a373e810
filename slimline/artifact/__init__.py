"""Model artifacts: a folder holding recipe.json (recipe.py: architecture + structural edits,
JSON), weights.safetensors and model.onnx (store.py: written atomically with an export that passed
torch/ONNX parity, loaded without unpickling), the structural edits replayed on a fresh base model
(edits.py), the ONNX export (onnx_export.py), atomic file writes (atomic.py) and the
distillation student's construction (student.py)."""
