"""Data: named-input splits and their deterministic cut (splits.py), where the examples come
from (sources.py: MNIST, an image folder, an .npz file, a factory) and text files tokenized with
the model's own tokenizer (text.py). numpy only at import."""
