"""params.yaml, loaded through a typed schema.

Every knob of the line lives in one section per stage. Unknown keys, wrong types and
out-of-range values stop a stage with one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimline.errors import SlimlineError


class Section(BaseModel):
    # strict: YAML already carries types, so "5" for an int is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(Section):
    source: Literal["mnist"] = "mnist"
    # Split sizes in images; the rest of the data set is the training split.
    val_size: int = Field(500, ge=1)
    test_size: int = Field(1000, ge=1)
    # Calibration images for int8 quantization, drawn from the training split.
    calibration_size: int = Field(256, ge=1)


class ModelParams(Section):
    architecture: Literal["resnet_digits"] = "resnet_digits"
    widths: list[Annotated[int, Field(ge=1)]] = Field([64, 128, 256], min_length=1)
    blocks_per_stage: int = Field(1, ge=1)
    num_classes: int = Field(10, ge=2)


class TrainParams(Section):
    """How a model is trained or fine-tuned (SGD with Nesterov momentum, one-cycle schedule)."""
    epochs: int = Field(8, ge=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    # Random shifts of up to this many pixels: cheap augmentation that helps on 3,500 images.
    max_shift: int = Field(2, ge=0)


class PrepareParams(Section):
    train: TrainParams = TrainParams()
    # Largest allowed |torch - ONNX| logit difference; beyond it the export is refused.
    parity_tolerance: float = Field(1e-3, gt=0)


class PruneParams(Section):
    enabled: bool = False


class DecomposeParams(Section):
    enabled: bool = False


class DistillParams(Section):
    enabled: bool = False


class QuantizeParams(Section):
    enabled: bool = False


class EvaluateParams(Section):
    # Batch-1 latency: timed runs per model, after warm-up runs, interleaved across models.
    latency_runs: int = Field(300, ge=200)
    warmup_runs: int = Field(30, ge=1)
    rounds: int = Field(10, ge=1)
    threads: int = Field(1, ge=1)
    throughput_batch: int = Field(64, ge=1)
    throughput_runs: int = Field(20, ge=1)


class Params(Section):
    seed: int = Field(0, ge=0)
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    prepare: PrepareParams = PrepareParams()
    prune: PruneParams = PruneParams()
    decompose: DecomposeParams = DecomposeParams()
    distill: DistillParams = DistillParams()
    quantize: QuantizeParams = QuantizeParams()
    evaluate: EvaluateParams = EvaluateParams()


def _describe(error: dict, source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if error["type"] == "missing":
        return f"{source}: missing key '{key}'"
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {key} = {value!r} is not allowed: {message}"


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SlimlineError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise SlimlineError(_describe(exc.errors()[0], source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise SlimlineError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SlimlineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw, str(path))
