"""The artifact's recipe.json: how to rebuild the model, with no code and no pickle; and the
artifacts that need no torch (an ONNX-only model, a pass-through copy).

A recipe names the base architecture (a builtin name, "huggingface" with the model's config, a
trusted factory "package.module:function", or "onnx" for an ONNX-only model) and its arguments, the
ordered structural edits that turned it into this model (slimline/artifact/edits.py), the named
inputs, the precision and the stages that made it. JSON only: reading a recipe needs no torch.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from slimline.artifact.atomic import atomic_dir
from slimline.errors import SlimlineError

FORMAT = "slimline-artifact/2"   # 2: named inputs (was input_shape + input_name)
RECIPE, WEIGHTS, ONNX = "recipe.json", "weights.safetensors", "model.onnx"
ONNX_ARCHITECTURE = "onnx"   # an ONNX file exported elsewhere: no torch model to edit


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
    def from_json(cls, data: dict, source: str) -> Recipe:
        if data.get("format") != FORMAT:
            found = data.get("format")
            hint = (
                "; made by an older Slimline: rebuild it"
                if str(found).startswith("slimline-artifact/")
                else ""
            )
            raise SlimlineError(f"{source}: not a Slimline recipe of format {FORMAT} "
                                f"(format {found!r}{hint})")
        fields = {key: value for key, value in data.items() if key != "format"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise SlimlineError(f"{source}: malformed recipe ({exc})") from None

    @property
    def axes(self) -> dict[str, list]:
        """Input name -> dynamic axis names, as export_onnx takes them."""
        return {spec["name"]: spec["axes"] for spec in self.inputs}

    def derive(self, stage: str, **changes) -> Recipe:
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


def write_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(json.dumps(recipe.to_json(), indent=2) + "\n")


def write_onnx_artifact(target: str | Path, onnx_file: Path, recipe: Recipe) -> None:
    """An ONNX-only artifact (e.g. an int8 model): recipe + model.onnx, no torch weights."""
    with atomic_dir(Path(target)) as tmp:
        write_recipe(recipe, tmp / RECIPE)
        shutil.copyfile(onnx_file, tmp / ONNX)


def copy_artifact(
    source: str | Path, target: str | Path, stage: str, note: str = "disabled"
) -> Recipe:
    """Pass-through for a stage that did not act: the same model, its history noting the stage
    and why ("disabled", or "skipped: reason")."""
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
