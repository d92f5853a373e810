"""The teacher the line starts from: a builtin architecture, a user factory (+ weights), or an
ONNX file exported elsewhere. Shapes and input names come from the data and the model, never
from constants."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.config.params import ModelParams
from slimline.data.splits import Inputs
from slimline.errors import SlimlineError


def _listed(names: list[str], limit: int = 3) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def architecture_and_arguments(config: ModelParams, inputs: Inputs) -> tuple[str, dict]:
    """What the recipe records: a builtin name + its arguments, or the factory path + its args."""
    if config.source == "factory":
        return config.factory, dict(config.factory_args)
    images = next(iter(inputs.values()))
    if len(inputs) != 1 or images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        shapes = {name: f"{array.dtype}{list(array.shape[1:])}" for name, array in inputs.items()}
        raise SlimlineError(
            f"model.architecture = {config.architecture} takes one float image input "
            f"of shape (C, H, W); the data gives {shapes}"
        )
    if config.architecture == "efficientnet_lite":
        height, width = images.shape[2:]
        if height != width:
            raise SlimlineError(f"model.architecture = efficientnet_lite takes square images; the "
                                f"data gives {height}x{width} (set data.preprocess.size)")
        return config.architecture, {"variant": config.variant, "num_classes": config.num_classes,
                                     "in_channels": int(images.shape[1]),
                                     "image_size": int(height)}
    return config.architecture, {"in_channels": int(images.shape[1]),
                                 "num_classes": config.num_classes, "widths": list(config.widths),
                                 "blocks_per_stage": config.blocks_per_stage}


def read_state_dict(path: Path) -> dict:
    """Tensors from .safetensors, or from a torch checkpoint loaded with weights_only=True
    (a plain state dict, or one under a "state_dict" key). Never unpickles code."""
    import pickle

    import torch

    if not path.is_file():
        raise SlimlineError(f"model.weights = {path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SlimlineError(
                f"model.weights = {path}: not a readable safetensors file ({exc})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        message = str(exc).strip().splitlines()[0][:200]
        raise SlimlineError(
            f"model.weights = {path}: not a state dict torch.load(weights_only=True) "
            f"accepts ({message}); save model.state_dict(), never the whole model"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SlimlineError(
            f"model.weights = {path}: expected a mapping of parameter names to tensors"
        )
    return state


def load_weights(model, path: Path) -> None:
    """Load `path` into `model`, or one line naming the keys that do not match."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {list(state[key].shape)} vs {list(expected[key].shape)}" for key in expected
             if key in state and state[key].shape != expected[key].shape]
    problems = [f"{label} {_listed(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise SlimlineError(
            f"model.weights = {path}: weights do not match the model's architecture: "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def check_outputs(logits_shape: tuple, num_classes: int, where: str) -> None:
    if len(logits_shape) != 2 or logits_shape[1] != num_classes:
        raise SlimlineError(
            f"{where}: the model outputs shape {list(logits_shape[1:])} per example; "
            f"model.num_classes = {num_classes} logits expected"
        )


# ----------------------------------------------------------------------------- ONNX teachers

def onnx_graph_inputs(model) -> dict[str, list]:
    """Graph input name -> dims (an int, or the axis name / None for a dynamic axis)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        inputs[value.name] = [
            dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
            for dim in value.type.tensor_type.shape.dim
        ]
    return inputs


def match_onnx_inputs(graph_inputs: dict[str, list], inputs: Inputs, where: str) -> Inputs:
    """The data's inputs under the graph's names (a single input takes the graph's single
    input's name); shapes checked against every fixed axis; the batch axis must be dynamic."""
    if len(graph_inputs) == 1 and len(inputs) == 1:
        inputs = {next(iter(graph_inputs)): next(iter(inputs.values()))}
    if sorted(graph_inputs) != sorted(inputs):
        raise SlimlineError(
            f"{where}: the graph takes inputs {list(graph_inputs)}, the data provides "
            f"{list(inputs)}; they must have the same names"
        )
    for name, dims in graph_inputs.items():
        shape = inputs[name].shape
        if dims and isinstance(dims[0], int):
            raise SlimlineError(
                f"{where}: input '{name}' has a fixed batch size {dims[0]}; export it "
                "with a dynamic batch axis (dynamic_shapes / dynamic_axes)"
            )
        if len(dims) != len(shape) or any(
            isinstance(d, int) and d != s for d, s in zip(dims[1:], shape[1:])
        ):
            raise SlimlineError(
                f"{where}: input '{name}' expects shape {['batch', *dims[1:]]}, the data "
                f"gives {['batch', *shape[1:]]}"
            )
    return {name: inputs[name] for name in graph_inputs}   # the graph's order


def onnx_input_specs(graph_inputs: dict[str, list], inputs: Inputs) -> list[dict]:
    return [{"name": name, "dtype": str(inputs[name].dtype), "shape": [1, *inputs[name].shape[1:]],
             "axes": ["batch" if axis == 0 else (d if isinstance(d, str) else None)
                      for axis, d in enumerate(dims)]}
            for name, dims in graph_inputs.items()]
