"""Knowledge distillation: a student learns from the teacher's softened outputs (Hinton et al.).

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s)

T^2 keeps the soft term's gradients on the scale of the hard term's as T grows. Optionally
(feature_weight > 0) the student also matches the teacher's intermediate feature maps through
learned 1x1 adapters (FitNets-style hints), which are discarded after training.

The teacher only ever runs in eval mode under torch.inference_mode: its BatchNorm statistics
and weights are never touched. It sees exactly the augmented batch the student sees, so the
soft targets describe the student's input (precomputing them on unaugmented images would
teach the student the wrong answer for every shifted digit).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimline.config.params import DistillParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.task import CLASSIFIER, Task
from slimline.training import device as training_device
from slimline.training.loop import (
    TensorInputs,
    accuracy,
    cross_entropy,
    fit,
    forward,
    seed_everything,
    to_tensors,
)


def check_same_outputs(teacher: nn.Module, student: nn.Module, example: TensorInputs) -> None:
    """Distillation compares the two outputs item by item: they must have the same shape."""
    with torch.no_grad():
        teacher_shape = tuple(forward(teacher.eval(), example).shape)
        student_shape = tuple(forward(student.eval(), example).shape)
    if teacher_shape != student_shape:
        raise SlimlineError(f"the student outputs {student_shape[1:]} values per example, the "
                            f"teacher {teacher_shape[1:]}; they must match")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels, student)."""
    if temperature <= 0:
        raise SlimlineError(f"distillation temperature must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise SlimlineError(f"distillation alpha must be in [0, 1], got {alpha}")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    log_target=True, reduction="batchmean")
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard


def feature_stages(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are matched in feature distillation: the residual blocks."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.Sequential):
        raise SlimlineError(
            f"feature distillation needs a model with a `layers` sequence of blocks "
            f"({type(model).__name__} has none); set distill.feature_weight: 0"
        )
    return list(layers)


class _FeatureTap:
    """Records a module's output on every forward call."""

    def __init__(self, module: nn.Module):
        self.value = None
        self.handle = module.register_forward_hook(self._record)

    def _record(self, module, inputs, output):
        self.value = output


def _channels(model: nn.Module, stages: list[nn.Module], example: TensorInputs) -> list[int]:
    taps = [_FeatureTap(stage) for stage in stages]
    with torch.no_grad():
        training = model.training
        forward(model.eval(), example)
        model.train(training)
    for tap in taps:
        tap.handle.remove()
    return [tap.value.shape[1] for tap in taps]


class StudentWithAdapters(nn.Module):
    """The student plus 1x1 adapters mapping its block outputs to the teacher's widths.
    Wrapping them in one module lets the one training loop optimise both."""

    def __init__(
        self, student: nn.Module, student_channels: list[int], teacher_channels: list[int]
    ):
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleList(nn.Conv2d(s, t, 1, bias=False)
                                      for s, t in zip(student_channels, teacher_channels))

    def forward(self, *inputs):
        return self.student(*inputs)


@dataclass
class DistillResult:
    student: nn.Module
    loss_history: list[float]


def distill(student: nn.Module, teacher: nn.Module, train: Split, config: DistillParams, *,
            seed: int, log=print, task: Task = CLASSIFIER,
            kept_layers: list[int] | None = None) -> DistillResult:
    """Train `student` (in place) against `teacher`'s soft targets (an embedding model: against
    its embeddings and hidden states, slimline/techniques/distill_encoder.py, where
    `kept_layers` are the teacher layers a shallower student started from); the teacher is
    never updated."""
    teacher = teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    temperature, alpha = config.temperature, config.alpha

    if task.is_embedding:
        from slimline.techniques.distill_encoder import distill_encoder

        if config.feature_weight:
            raise SlimlineError("distill.feature_weight is for convnets with residual blocks; "
                                "set it to 0 for an embedding model")
        report = distill_encoder(student, teacher, train, config, seed=seed,
                                 kept_layers=kept_layers, log=log)
        return DistillResult(student.eval(), report.loss_history)
    training_device.place(teacher)
    if config.feature_weight == 0:
        def loss_fn(model, inputs, labels):
            with torch.inference_mode():
                teacher_logits = forward(teacher, inputs)
            return kd_loss(forward(model, inputs), teacher_logits.clone(), labels,
                           temperature=temperature, alpha=alpha)
        trained = student
    else:
        student_stages, teacher_stages = feature_stages(student), feature_stages(teacher)
        if len(student_stages) != len(teacher_stages):
            raise SlimlineError(f"feature distillation: student has {len(student_stages)} blocks, "
                                f"teacher {len(teacher_stages)}; they must match")
        example = to_tensors(train.head(2))
        seed_everything(seed)  # adapters' initialisation is part of the seeded run
        trained = StudentWithAdapters(student, _channels(student, student_stages, example),
                                      _channels(teacher, teacher_stages, example))
        student_taps = [_FeatureTap(stage) for stage in student_stages]
        teacher_taps = [_FeatureTap(stage) for stage in teacher_stages]

        def loss_fn(model, inputs, labels):
            with torch.inference_mode():
                teacher_logits = forward(teacher, inputs)
            loss = kd_loss(forward(model, inputs), teacher_logits.clone(), labels,
                           temperature=temperature, alpha=alpha)
            hints = sum(
                F.mse_loss(adapter(s_tap.value), t_tap.value.clone())
                for adapter, s_tap, t_tap in zip(model.adapters, student_taps, teacher_taps)
            )
            return loss + config.feature_weight * hints / len(student_taps)

    seed_everything(seed)
    history = fit(trained, train, config.train, seed=seed, loss_fn=loss_fn,
                  description="distill", log=log)
    teacher.to("cpu")
    if config.feature_weight:
        for tap in student_taps + teacher_taps:
            tap.handle.remove()
    return DistillResult(student.eval(), history)


def train_without_teacher(student: nn.Module, train: Split, config: DistillParams, *,
                          seed: int, log=print) -> DistillResult:
    """The control: the same student, schedule and seed, trained on the labels alone."""
    seed_everything(seed)
    history = fit(student, train, config.train, seed=seed, loss_fn=cross_entropy,
                  description="no-teacher", log=log)
    return DistillResult(student.eval(), history)


@dataclass
class Comparison:
    """What distillation bought: the same student with and without the teacher (top-1, 0..1)."""
    distilled: nn.Module
    distilled_val: float
    distilled_test: float
    control_val: float | None = None
    control_test: float | None = None

    @property
    def gain_val_points(self) -> float | None:
        return None if self.control_val is None else 100 * (self.distilled_val - self.control_val)

    @property
    def gain_test_points(self) -> float | None:
        return (
            None if self.control_test is None else 100 * (self.distilled_test - self.control_test)
        )


def distill_and_compare(student: nn.Module, teacher: nn.Module, splits: dict[str, Split],
                        config: DistillParams, *, seed: int, log=print,
                        task: Task = CLASSIFIER, kept_layers: list[int] | None = None
                        ) -> Comparison:
    """The distilled student's top-1 on val and test (an embedding model's: its fidelity to the
    teacher), and, with compare_without_teacher, the same for the control run on labels alone
    (which an embedding model, having no labels, cannot have)."""
    control = (copy.deepcopy(student) if config.compare_without_teacher and not task.is_embedding
               else None)
    distilled = distill(student, teacher, splits["train"], config, seed=seed, log=log,
                        task=task, kept_layers=kept_layers).student
    score = task.score(teacher)
    result = Comparison(
        distilled, score(distilled, splits["val"]), score(distilled, splits["test"])
    )
    if control is not None:
        control = train_without_teacher(
            control, splits["train"], config, seed=seed, log=log
        ).student
        result.control_val = accuracy(control, splits["val"])
        result.control_test = accuracy(control, splits["test"])
    return result
