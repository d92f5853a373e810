"""The model artifact: a directory holding a recipe (JSON), weights (safetensors) and ONNX.

    recipe.json          base architecture + structural edits + named inputs + lineage
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


def input_specs(example, axes: dict[str, list] | None = None) -> list[dict]:
    """The recipe's description of named inputs (`example`: name -> array or tensor): dtype, the
    shape of one example (batch first) and the name of each dynamic axis (None = fixed).
    Without `axes` only the batch axis is dynamic."""
    specs = []
    for name, array in example.items():
        shape = [1, *array.shape[1:]]
        names = (axes or {}).get(name) or ["batch"] + [None] * (len(shape) - 1)
        specs.append({"name": name, "dtype": str(array.dtype).removeprefix("torch."),
                      "shape": shape, "axes": list(names)})
    return specs


@dataclass
class Recipe:
    # A builtin name (slimline/models) or a factory import path "package.module:function".
    architecture: str
    arguments: dict
    inputs: list[dict]              # named inputs, in forward() order (see input_specs)
    edits: list[dict] = field(default_factory=list)
    output_name: str = "logits"
    precision: str = "fp32"         # fp32, or the quantization scheme of an ONNX-only artifact
    history: list[str] = field(default_factory=list)  # which stages made this artifact

    def __post_init__(self):
        if self.inputs and isinstance(self.inputs[0], int):  # a bare shape: one float32 image input
            self.inputs = [{"name": "input", "dtype": "float32", "shape": [1, *self.inputs[1:]],
                            "axes": ["batch"] + [None] * (len(self.inputs) - 1)}]

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

    @property
    def axes(self) -> dict[str, list]:
        """Input name -> dynamic axis names, as export_onnx takes them."""
        return {spec["name"]: spec["axes"] for spec in self.inputs}

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

    `parity_inputs` are named inputs (name -> array), in the model's argument order.
    Returns the max |torch - ONNX| logit difference on them.
    """
    from slimline.atomic import atomic_dir
    from slimline.data import as_inputs, take
    from slimline.onnx_export import check_parity, export_onnx, parity
    from slimline.train import to_tensors

    target = Path(target)
    model = model.eval()
    with atomic_dir(target) as tmp:
        write_recipe(recipe, tmp / RECIPE)
        save_weights(model, tmp / WEIGHTS)
        parity_inputs = as_inputs(parity_inputs)
        example = to_tensors(take(parity_inputs, slice(0, 2)))
        export_onnx(model, example, tmp / ONNX, axes=recipe.axes, output_name=recipe.output_name)
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


def copy_artifact(source: str | Path, target: str | Path, stage: str, note: str = "disabled") -> Recipe:
    """Pass-through for a stage that did not act: the same model, its history noting the stage
    and why ("disabled", or "skipped: reason")."""
    import shutil

    from slimline.atomic import atomic_dir

    source = Path(source)
    recipe = read_recipe(source).derive(f"{stage} ({note})")
    with atomic_dir(Path(target)) as tmp:
        for name in (WEIGHTS, ONNX):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        if not (tmp / ONNX).is_file():
            raise SlimlineError(f"{source / ONNX}: model artifact has no ONNX graph")
        write_recipe(recipe, tmp / RECIPE)
    return recipe
