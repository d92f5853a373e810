"""The model artifact: a directory holding a recipe (JSON), weights (safetensors) and ONNX.

    recipe.json          base architecture + structural edits + input spec + lineage
    weights.safetensors  tensors only (absent for ONNX-only artifacts such as int8 models)
    model.onnx           the graph that ships, weights embedded (one file, counted in size)

Loading never unpickles: safetensors holds raw tensors, the recipe is JSON.
torch is imported only by the functions that build or save a torch model, so ONNX-only
consumers (evaluate, quantize's reader) run without the training stack.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slimline.errors import SlimlineError

if TYPE_CHECKING:
    from torch import nn

FORMAT = "slimline-artifact/1"
RECIPE, WEIGHTS, ONNX = "recipe.json", "weights.safetensors", "model.onnx"


@dataclass
class Recipe:
    architecture: str
    arguments: dict
    input_shape: list[int]          # one example, batch dimension first (batch is dynamic)
    edits: list[dict] = field(default_factory=list)
    input_name: str = "input"
    output_name: str = "logits"
    precision: str = "fp32"         # fp32, or the quantization scheme of an ONNX-only artifact
    history: list[str] = field(default_factory=list)  # which stages made this artifact

    def to_json(self) -> dict:
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def from_json(cls, data: dict, source: str) -> "Recipe":
        if data.get("format") != FORMAT:
            raise SlimlineError(f"{source}: not a Slimline recipe (format {data.get('format')!r})")
        fields = {key: value for key, value in data.items() if key != "format"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise SlimlineError(f"{source}: malformed recipe ({exc})") from None

    def derive(self, stage: str, **changes) -> "Recipe":
        """The recipe of a model made from this one by `stage`."""
        data = {**self.__dict__, "edits": list(self.edits), "history": [*self.history, stage]}
        data.update(changes)
        return Recipe(**data)


def read_recipe(directory: str | Path) -> Recipe:
    path = Path(directory) / RECIPE
    if not path.is_file():
        raise SlimlineError(f"{path}: model artifact has no recipe (missing file)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SlimlineError(f"{path}: recipe is not valid JSON ({exc})") from None
    return Recipe.from_json(data, str(path))


def build_from_recipe(recipe: Recipe) -> nn.Module:
    """The model's skeleton (right shapes, untrained weights)."""
    from slimline.models import build_model
    from slimline.recipe import apply_edits

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
        raise SlimlineError(f"{path}: weights do not match the recipe's architecture ({first})") from None
    return model.eval(), recipe


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    # contiguous clones: safetensors refuses shared or strided storage.
    state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    save_file(state, str(path))


def write_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(json.dumps(recipe.to_json(), indent=2) + "\n")


def write_artifact(target: str | Path, model: nn.Module, recipe: Recipe, parity_inputs,
                   tolerance: float) -> float:
    """Write recipe + weights + ONNX atomically; refuse (write nothing) if parity fails.

    Returns the max |torch - ONNX| logit difference on `parity_inputs`.
    """
    import torch

    from slimline.atomic import atomic_dir
    from slimline.onnx_export import check_parity, export_onnx, parity

    target = Path(target)
    model = model.eval()
    with atomic_dir(target) as tmp:
        write_recipe(recipe, tmp / RECIPE)
        save_weights(model, tmp / WEIGHTS)
        example = torch.from_numpy(parity_inputs[:2])
        export_onnx(model, example, tmp / ONNX, input_name=recipe.input_name,
                    output_name=recipe.output_name)
        difference = parity(model, tmp / ONNX, parity_inputs)
        check_parity(difference, tolerance, str(target))
    return difference


def write_onnx_artifact(target: str | Path, onnx_file: Path, recipe: Recipe) -> None:
    """An ONNX-only artifact (e.g. an int8 model): recipe + model.onnx, no torch weights."""
    import shutil

    from slimline.atomic import atomic_dir

    with atomic_dir(Path(target)) as tmp:
        write_recipe(recipe, tmp / RECIPE)
        shutil.copyfile(onnx_file, tmp / ONNX)


def copy_artifact(source: str | Path, target: str | Path, stage: str) -> Recipe:
    """Pass-through for a switched-off stage: the same model, its history noting the stage."""
    import shutil

    from slimline.atomic import atomic_dir

    source = Path(source)
    recipe = read_recipe(source).derive(f"{stage} (disabled)")
    with atomic_dir(Path(target)) as tmp:
        for name in (WEIGHTS, ONNX):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        if not (tmp / ONNX).is_file():
            raise SlimlineError(f"{source / ONNX}: model artifact has no ONNX graph")
        write_recipe(recipe, tmp / RECIPE)
    return recipe
