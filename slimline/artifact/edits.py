"""Structural edits: how a pruned or factorised model is rebuilt from its base architecture.

A recipe is JSON: the base architecture and its arguments plus an ordered list of edits.
Replaying the edits on a freshly built base gives a model with exactly the artifact's tensor
shapes, into which the safetensors weights load. Nothing is ever unpickled.
"""
from __future__ import annotations

import torch
from torch import nn

from slimline.errors import SlimlineError

# Size-bearing attributes of the layers the line can resize (Conv, Linear, norms, attention;
# the last three are Hugging Face self-attention's head bookkeeping).
SIZE_ATTRIBUTES = ("in_channels", "out_channels", "groups", "in_features", "out_features",
                   "num_features", "normalized_shape", "embed_dim", "num_heads", "head_dim",
                   "kdim", "vdim", "num_attention_heads", "attention_head_size", "all_head_size")


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _module_sizes(module: nn.Module) -> dict:
    return {name: _jsonable(getattr(module, name)) for name in SIZE_ATTRIBUTES
            if isinstance(getattr(module, name, None), (int, tuple))}


def _own_tensors(module: nn.Module) -> dict[str, list[int]]:
    tensors = dict(module.named_parameters(recurse=False))
    tensors.update(
        (name, buf) for name, buf in module.named_buffers(recurse=False) if buf is not None
    )
    return {name: list(tensor.shape) for name, tensor in tensors.items()}


def resize_edits(reference: nn.Module, edited: nn.Module) -> list[dict]:
    """One `resize` edit per module whose tensor shapes or size attributes differ between the two
    models (an attention module that lost heads owns no tensor, but its head count changed)."""
    reference_modules = dict(reference.named_modules())
    edits = []
    for name, module in edited.named_modules():
        before = reference_modules.get(name)
        if before is None or type(before) is not type(module):
            raise SlimlineError(
                f"resize_edits: module '{name}' has no counterpart of the same type"
            )
        shapes = _own_tensors(module)
        if shapes != _own_tensors(before) or _module_sizes(module) != _module_sizes(before):
            edits.append({"op": "resize", "module": name, "type": type(module).__name__,
                          "attributes": _module_sizes(module), "tensors": shapes})
    return edits


def apply_resize(model: nn.Module, edit: dict) -> None:
    module = model.get_submodule(edit["module"])
    for name, value in edit["attributes"].items():
        setattr(module, name, tuple(value) if isinstance(value, list) else value)
    for name, shape in edit["tensors"].items():
        current = getattr(module, name)
        fresh = torch.zeros(shape, dtype=current.dtype)
        if isinstance(current, nn.Parameter):
            setattr(module, name, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            module.register_buffer(name, fresh)


def factorize_edit(name: str, method: str, ranks: list[int]) -> dict:
    """The record of one layer replaced by its low-rank chain (slimline/techniques/lowrank.py)."""
    return {"op": "factorize", "module": name, "method": method, "ranks": [int(r) for r in ranks]}


def apply_factorize(model: nn.Module, edit: dict) -> None:
    from slimline.techniques.lowrank import factorized_skeleton

    layer = model.get_submodule(edit["module"])
    model.set_submodule(edit["module"], factorized_skeleton(layer, edit["method"], edit["ranks"]))


def keep_layers_edit(name: str, indices: list[int]) -> dict:
    """The record of a layer stack cut down to some of its layers (a shallower student)."""
    return {"op": "keep_layers", "module": name, "indices": [int(i) for i in indices]}


def apply_keep_layers(model: nn.Module, edit: dict) -> None:
    stack = model.get_submodule(edit["module"])
    if not isinstance(stack, nn.ModuleList):
        raise TypeError(f"{edit['module']} is a {type(stack).__name__}, not a ModuleList")
    model.set_submodule(edit["module"], nn.ModuleList(stack[index] for index in edit["indices"]))


def trim_vocabulary_edit(kept: list[int], unknown: int) -> dict:
    """The record of a word-embedding table cut to some token ids (a corpus's vocabulary)."""
    return {"op": "trim_vocabulary", "module": "token_map", "kept": [int(i) for i in kept],
            "unknown": int(unknown)}


def apply_trim_vocabulary(model: nn.Module, edit: dict) -> None:
    from slimline.models.huggingface import trim_vocabulary

    trim_vocabulary(model, edit["kept"], edit["unknown"])


EDIT_OPS = {
    "resize": apply_resize,
    "factorize": apply_factorize,
    "keep_layers": apply_keep_layers,
    "trim_vocabulary": apply_trim_vocabulary,
}


def apply_edits(model: nn.Module, edits: list[dict]) -> nn.Module:
    for index, edit in enumerate(edits):
        op = edit.get("op")
        if op not in EDIT_OPS:
            raise SlimlineError(
                f"recipe edit #{index}: unknown op '{op}' (known: {', '.join(EDIT_OPS)})"
            )
        try:
            EDIT_OPS[op](model, edit)
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            raise SlimlineError(
                f"recipe edit #{index} ({op} {edit.get('module')}): {exc}"
            ) from None
    return model
