"""The model artifact: a directory holding a recipe (JSON), weights (safetensors) and ONNX.

    recipe.json          base architecture + structural edits + named inputs + lineage
    weights.safetensors  tensors only (absent for ONNX-only artifacts such as int8 models)
    model.onnx           the graph that ships, weights embedded (one file, counted in size)

Loading never unpickles: safetensors holds raw tensors, the recipe is JSON. Writes are atomic,
and a torch model is written only with its ONNX export and a passed torch/ONNX parity check.
torch is imported only by the functions that build or save a torch model, so ONNX-only
consumers (evaluate, quantize's reader) run without the training stack.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slimline.artifact.recipe import ONNX, RECIPE, WEIGHTS, Recipe, read_recipe, write_recipe
from slimline.errors import SlimlineError

if TYPE_CHECKING:
    from torch import nn


def build_from_recipe(recipe: Recipe) -> nn.Module:
    """The model's skeleton (right shapes, untrained weights)."""
    from slimline.artifact.edits import apply_edits
    from slimline.models.architectures import build_model

    return apply_edits(build_model(recipe.architecture, **recipe.arguments), recipe.edits)


def load_model(directory: str | Path) -> tuple[nn.Module, Recipe]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    recipe = read_recipe(directory)
    path = directory / WEIGHTS
    if not path.is_file():
        raise SlimlineError(f"{path}: weights missing (is this an ONNX-only artifact?)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SlimlineError(f"{path}: not a readable safetensors file ({exc})") from None
    model = build_from_recipe(recipe)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise SlimlineError(
            f"{path}: weights do not match the recipe's architecture ({first})"
        ) from None
    return model.eval(), recipe


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    # contiguous clones: safetensors refuses shared or strided storage.
    state = {
        name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()
    }
    save_file(state, str(path))


def check_replay(recipe: Recipe, model: nn.Module) -> None:
    """The recipe must rebuild exactly these tensor shapes, or the artifact would not reload."""
    try:
        build_from_recipe(recipe).load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise SlimlineError(
            f"the recipe's edits do not reproduce the model ({str(exc)[:200]})"
        ) from None


def write_artifact(target: str | Path, model: nn.Module, recipe: Recipe, parity_inputs,
                   tolerance: float) -> float:
    """Write recipe + weights + ONNX atomically; refuse (write nothing) if the recipe does not
    rebuild the model or torch/ONNX parity fails.

    `parity_inputs` are named inputs (name -> array), in the model's argument order.
    Returns the max |torch - ONNX| logit difference on them.
    """
    from slimline.artifact.atomic import atomic_dir
    from slimline.artifact.onnx_export import check_parity, export_onnx, parity
    from slimline.data.splits import as_inputs, take
    from slimline.training.loop import to_tensors

    target = Path(target)
    model = model.eval()
    check_replay(recipe, model)
    with atomic_dir(target) as tmp:
        write_recipe(recipe, tmp / RECIPE)
        save_weights(model, tmp / WEIGHTS)
        parity_inputs = as_inputs(parity_inputs)
        example = to_tensors(take(parity_inputs, slice(0, 2)))
        export_onnx(model, example, tmp / ONNX, axes=recipe.axes, output_name=recipe.output_name)
        difference = parity(model, tmp / ONNX, parity_inputs)
        check_parity(difference, tolerance, str(target))
    return difference
