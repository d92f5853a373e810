"""A Hugging Face transformer (encoder or sequence classifier) from a local directory.

The line never downloads and never runs code from the folder: every load is `local_files_only`,
`trust_remote_code=False` and safetensors only (a pickled pytorch_model.bin is refused), and the
hub is switched offline before transformers is imported. The artifact's recipe carries the
model's config as JSON, so a compressed model rebuilds from the recipe alone (config -> skeleton
-> structural edits -> safetensors weights); the user's directory is read once, by prepare.

`TextModel` gives every transformer the same face: named inputs `input_ids` and
`attention_mask` (int64, batch x sequence) in, one tensor out: class logits for a classifier,
the mean-pooled last hidden state (padding excluded) for an encoder used for embeddings.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from slimline.errors import SlimlineError

# Before transformers is imported anywhere: no hub calls, no telemetry, no progress bars.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TASKS = ("classification", "embedding")
# The graph's named inputs and their dynamic axes (both share one batch and one sequence length).
TEXT_AXES = {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model")


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def config_from_dict(config: dict):
    """The transformers config object for a JSON config (as saved in a recipe)."""
    transformers = _quiet_transformers()
    values = dict(config)
    model_type = values.pop("model_type", None)
    try:
        return transformers.AutoConfig.for_model(model_type, **values)
    except (ValueError, TypeError) as exc:
        raise SlimlineError(
            f"transformer config: cannot rebuild model type {model_type!r} ({exc})"
        ) from None


def config_to_dict(config) -> dict:
    """JSON-safe config (what the recipe stores); `to_dict` keeps model_type and architectures."""
    return json.loads(config.to_json_string(use_diff=False))


def infer_task(config) -> str:
    """classification for a *ForSequenceClassification checkpoint, else embedding."""
    architectures = getattr(config, "architectures", None) or []
    return "classification" if any(a.endswith("ForSequenceClassification") for a in architectures) \
        else "embedding"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that are not padding (the usual sentence embedding)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class TextModel(nn.Module):
    """(input_ids, attention_mask) -> logits (classification) or pooled embedding."""

    def __init__(self, transformer: nn.Module, task: str):
        super().__init__()
        if task not in TASKS:
            raise SlimlineError(f"transformer task '{task}' is not one of {', '.join(TASKS)}")
        self.model, self.task = transformer, task
        # Token id -> row of a trimmed word-embedding table (trim_vocabulary); None: untrimmed.
        self.register_buffer("token_map", None)

    def table_rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The word-embedding rows the token ids read: the ids themselves, unless trimmed."""
        return input_ids if self.token_map is None else self.token_map[input_ids]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=self.table_rows(input_ids), attention_mask=attention_mask)
        if self.task == "classification":
            return output.logits
        return mean_pool(output.last_hidden_state, attention_mask)


class FusableTextModel(nn.Module):
    """The same model, written the way ONNX Runtime's transformer fusion recognises
    (slimline/techniques/fusion.py): eager attention, and the additive 4-D mask
    (1 - mask) * -10000 built here rather than inside the library. Same outputs as the
    TextModel it wraps (measured within 1e-6)."""

    def __init__(self, text_model: TextModel):
        super().__init__()
        self.inner = text_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(torch.float32)) * -10000.0
        output = self.inner.model(input_ids=self.inner.table_rows(input_ids),
                                  attention_mask=additive)
        if self.inner.task == "classification":
            return output.logits
        return mean_pool(output.last_hidden_state, attention_mask)


def fusable_text_model(model: TextModel) -> tuple[FusableTextModel, int, int]:
    """(wrapper, attention heads, attention width) for the fusion export; the model is switched
    to eager attention (a copy is not needed: the artifact was already written). One clear line
    when layers differ in head count (ORT fuses with one head count for the whole graph)."""
    heads = {module.num_attention_heads for module in attention_layers(model)}
    widths = {module.all_head_size for module in attention_layers(model)}
    if len(heads) != 1 or len(widths) != 1:
        raise SlimlineError(f"attention layers have different head counts ({sorted(heads)}): "
                            "ORT's attention fusion takes one count for the whole graph")
    model.model.set_attn_implementation("eager")
    return FusableTextModel(model).eval(), heads.pop(), widths.pop()


def _auto_class(config, task: str):
    """The transformers class for the task, and its construction options: sdpa attention (it
    exports to plain MatMul/Softmax ONNX, the same maths as eager) and, for an embedding model,
    no pooler where the class allows it (the embedding is the mean of the tokens, so a pooler
    would be dead weight, randomly initialised when the checkpoint has none)."""
    import inspect

    transformers = _quiet_transformers()
    auto = (transformers.AutoModelForSequenceClassification if task == "classification"
            else transformers.AutoModel)
    options = {"attn_implementation": "sdpa"}
    if task == "embedding":
        model_class = auto._model_mapping.get(type(config), None)
        if (
            model_class
            and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
        ):
            options["add_pooling_layer"] = False
    return auto, options


def _skeleton(config, task: str) -> nn.Module:
    auto, options = _auto_class(config, task)
    return auto.from_config(config, **options)


def build_text_model(config: dict, task: str) -> TextModel:
    """The model's skeleton from its recipe (untrained weights; no file is read)."""
    return TextModel(_skeleton(config_from_dict(config), task), task).eval()


def check_model_directory(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise SlimlineError(f"{path}: model.path is not a directory (expected a Hugging Face model "
                            "saved with save_pretrained)")
    if not (path / "config.json").is_file():
        raise SlimlineError(f"{path}: not a Hugging Face model directory (no config.json)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        if any((path / name).is_file() for name in PICKLED_WEIGHT_FILES):
            # A pickle runs code when it is loaded; the line never unpickles a user's file.
            raise SlimlineError(
                f"{path}: the weights are a pickled pytorch_model.bin, which the line "
                "does not load; convert them to safetensors once, where you trust "
                "the file (model.save_pretrained(folder, safe_serialization=True))"
            )
        raise SlimlineError(f"{path}: Hugging Face model directory has no weights "
                            f"(none of {', '.join(WEIGHT_FILES)})")
    return path


def load_pretrained(path: str | Path, task: str | None = None) -> tuple[TextModel, dict, str]:
    """The user's model from a local directory: (model, JSON config, task). Never downloads."""
    path = check_model_directory(path)
    transformers = _quiet_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True,
                                                         trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise SlimlineError(f"{path / 'config.json'}: not a readable Hugging Face config "
                            f"({str(exc).splitlines()[0][:200]})") from None
    task = task or infer_task(config)
    auto, options = _auto_class(config, task)
    try:
        # safetensors only and no code from the folder: loading a model never runs code.
        transformer = auto.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                           trust_remote_code=False, **options)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise SlimlineError(f"{path}: cannot load the Hugging Face model "
                            f"({str(exc).strip().splitlines()[0][:200]})") from None
    return TextModel(transformer, task).eval(), config_to_dict(transformer.config), task


def label2id(path: str | Path) -> dict[str, int] | None:
    """The class names of a saved classifier (config.json), or None."""
    try:
        mapping = json.loads((Path(path) / "config.json").read_text()).get("label2id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return {str(name): int(index) for name, index in mapping.items()} if mapping else None


def load_tokenizer(path: str | Path):
    """The tokenizer saved next to the model (save_pretrained); one clear line if it is missing."""
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise SlimlineError(
            f"{path}: no tokenizer in the model directory (none of "
            f"{', '.join(TOKENIZER_FILES)}; save it with tokenizer.save_pretrained)"
        )
    transformers = _quiet_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                          trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SlimlineError(f"{path}: cannot load the tokenizer "
                            f"({str(exc).strip().splitlines()[0][:200]})") from None


def attention_layers(model: nn.Module, linear_only: bool = False) -> list[nn.Module]:
    """Self-attention modules with query/key/value projections (BERT, RoBERTa, ELECTRA, ...).
    A projection may be a Linear or, after decompose, its low-rank chain; `linear_only` keeps
    the modules whose projections are all still plain Linear layers (what head pruning cuts)."""
    kind = nn.Linear if linear_only else nn.Module
    return [
        module
        for module in model.modules()
        if all(isinstance(getattr(module, name, None), kind) for name in ("query", "key", "value"))
        and hasattr(module, "num_attention_heads")
    ]


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of transformer blocks (name, ModuleList): the one with the attention layers
    (found whether their projections are Linear or, after decompose, factorized chains: a
    stack of factorized layers is what "no stack of transformer layers found" used to miss)."""
    attention = set(attention_layers(model))
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                any(sub in attention for sub in block.modules()) for block in module):
            return name, module
    raise SlimlineError(f"{type(model).__name__}: no stack of transformer layers found")


def trim_vocabulary(model: TextModel, kept: list[int], unknown: int) -> None:
    """Keep only the word-embedding rows of the token ids `kept` (sorted, `unknown` among them);
    every other id reads the row of `unknown`, as a word the tokenizer never knew would. The
    tokenizer and the graph's inputs stay as they are: the id -> row map is part of the model."""
    table = model.model.get_input_embeddings()
    if table is None or not isinstance(table, nn.Embedding) or model.token_map is not None:
        raise SlimlineError(f"{type(model.model).__name__}: no untrimmed word-embedding table")
    rows = torch.tensor(kept, dtype=torch.int64)
    if unknown not in kept or len(set(kept)) != len(kept) or not 0 <= min(kept) <= max(kept) < \
            table.num_embeddings:
        raise SlimlineError(f"trim_vocabulary: {len(kept)} kept ids are not distinct ids of the "
                            f"{table.num_embeddings}-row table including the unknown id {unknown}")
    token_map = torch.full((table.num_embeddings,), kept.index(unknown), dtype=torch.int64)
    token_map[rows] = torch.arange(len(kept))
    padding = int(token_map[table.padding_idx]) if table.padding_idx is not None else None
    trimmed = nn.Embedding(len(kept), table.embedding_dim, padding_idx=padding,
                           dtype=table.weight.dtype)
    with torch.no_grad():
        trimmed.weight.copy_(table.weight[rows])
    model.model.set_input_embeddings(trimmed)
    model.token_map = token_map


def keep_encoder_layers(model: nn.Module, indices: list[int]) -> tuple[str, list[int]]:
    """Cut the model's transformer stack down to the layers at `indices` (a shallower student
    initialised from those layers); returns the stack's module name and the kept indices, what
    the recipe's keep_layers edit records."""
    name, stack = encoder_layers(model)
    bad = [index for index in indices if not -len(stack) <= index < len(stack)]
    kept = [index % len(stack) for index in indices if index not in bad]
    if bad or not indices or len(set(kept)) != len(kept):
        raise SlimlineError(
            f"distill.student_layers = {indices} is not allowed: the model has "
            f"{len(stack)} transformer layers (indices 0..{len(stack) - 1}, or from the end "
            "-1..; each layer once)"
        )
    model.set_submodule(name, nn.ModuleList(stack[index] for index in kept))
    return name, kept
