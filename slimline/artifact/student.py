"""The distillation student and its recipe: the input model (the structurally compressed one) as
it is, with only some of a transformer's layers (distill.student_layers), or a fresh model of the
teacher's architecture at narrower widths (distill.student_widths)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from slimline.artifact.edits import keep_layers_edit, trim_vocabulary_edit
from slimline.artifact.recipe import Recipe, read_recipe
from slimline.artifact.store import load_model
from slimline.config.params import DistillParams
from slimline.errors import SlimlineError

TRANSFORMER = "huggingface"


@dataclass
class Student:
    model: object          # torch.nn.Module
    recipe: Recipe
    description: str       # for the stage log
    kept_layers: list[int] | None = None   # teacher layers a shallower student started from


def build_student(input_dir: Path, teacher_recipe: Recipe, config: DistillParams, *,
                  seed: int) -> Student:
    from slimline.models.architectures import build_model
    from slimline.models.huggingface import encoder_layers, keep_encoder_layers
    from slimline.training.loop import seed_everything

    transformer = teacher_recipe.architecture == TRANSFORMER
    if transformer and config.student_widths is not None:
        raise SlimlineError("distill.student_widths is for the builtin convnets; a transformer's "
                            "narrower student is its pruned input model, and "
                            "distill.student_layers makes it shallower")
    if config.student_layers is not None and not transformer:
        raise SlimlineError("distill.student_layers is for transformers (model.source huggingface)")
    if config.student_widths is None:
        model, recipe = load_model(input_dir)
        made_by = f"the input model {input_dir} ({' -> '.join(recipe.history)})"
        if config.student_layers is None:
            return Student(model, recipe.derive("distill"), made_by)
        before = len(encoder_layers(model)[1])
        edit = keep_layers_edit(*keep_encoder_layers(model, list(config.student_layers)))
        return Student(model, recipe.derive("distill", edits=recipe.edits + [edit]),
                       f"{made_by}, keeping layers {edit['indices']} of its {before} "
                       "(distill.student_layers), initialised from them", edit["indices"])
    read_recipe(input_dir)  # still a declared dep: fail early and clearly if it is broken
    arguments = {**teacher_recipe.arguments, "widths": list(config.student_widths)}
    seed_everything(seed)
    model = build_model(teacher_recipe.architecture, **arguments)
    recipe = Recipe(architecture=teacher_recipe.architecture, arguments=arguments,
                    inputs=teacher_recipe.inputs, history=[*teacher_recipe.history, "distill"])
    return Student(
        model,
        recipe,
        f"a fresh {teacher_recipe.architecture} {arguments} "
        f"(distill.student_widths); the input model {input_dir} is not used",
    )


def trim_student_vocabulary(student: Student, kept: list[int], unknown: int) -> None:
    """Cut the student's word-embedding table to the token ids `kept` (slimline/techniques/
    vocabulary.py) and record the cut in its recipe, so the artifact rebuilds with it."""
    from slimline.models.huggingface import trim_vocabulary

    trim_vocabulary(student.model, kept, unknown)
    student.recipe = replace(student.recipe,
                             edits=[*student.recipe.edits, trim_vocabulary_edit(kept, unknown)])
