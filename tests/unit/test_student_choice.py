"""Choosing an encoder student by the budgets (slimline/techniques/student_choice.py): the
fastest candidate that meets the fidelity budget, else the most faithful fast one; layers by
backward elimination measured on a tiny BERT; candidates timed as int8 against the teacher."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slimline.artifact.onnx_export import export_onnx
from slimline.data.text import tokenize
from slimline.errors import SlimlineError
from slimline.measure.embedding import embedding_fidelity
from slimline.models.huggingface import (
    TEXT_AXES,
    encoder_layers,
    keep_encoder_layers,
    load_pretrained,
    load_tokenizer,
)
from slimline.techniques.student_choice import (
    Candidate,
    eliminate_layers,
    int8_speedups,
    pick,
    val_task_drop,
)
from slimline.training.loop import predict
from tests.helpers.text import save_tiny_bert, sentences


def candidate(depth, speedup, fidelity, task_drop=None):
    """A trained candidate; `task_drop` judged, its estimate a point worse (a wide interval)."""
    return Candidate(depth, list(range(depth)), 0.5, speedup, fidelity, task_drop,
                     None if task_drop is None else task_drop + 1)


def test_the_shallower_student_is_kept_when_both_meet_the_budgets():
    best, why = pick([candidate(3, 5.0, 0.975), candidate(4, 3.8, 0.985)], 3.0, 0.97)
    assert best.depth == 3 and "fastest that meets both budgets" in why


def test_the_deeper_student_is_kept_when_only_it_meets_the_fidelity_budget():
    best, _ = pick([candidate(3, 5.0, 0.95), candidate(4, 3.8, 0.975)], 3.0, 0.97)
    assert best.depth == 4
    # ... and not when it is too slow: then the fast one ships, and the line says none met.
    best, why = pick([candidate(3, 5.0, 0.95), candidate(4, 2.5, 0.975)], 3.0, 0.97)
    assert best.depth == 3 and why.startswith("NO student met")


def test_with_labels_the_fastest_student_that_keeps_the_task_ships_whatever_its_cosine():
    # MiniLM on a VNNI CPU: 3 layers 4.6x at cosine 0.929, 4 layers 3.5x at 0.952; both keep the
    # labelled task (the drop judged at the favourable end of its interval, in points).
    three, four = candidate(3, 4.6, 0.929, task_drop=-2.1), candidate(4, 3.5, 0.952, -2.8)
    best, why = pick([three, four], 3.0, 0.97, max_task_drop=1.0)
    assert best.depth == 3
    assert ("val task drop -1.10 points, -2.10 at the favourable end of its interval (budget 1)"
            ", val cosine 0.9290 beside it") in why
    # A fast student that loses 3 points of the task is passed over for one that keeps it...
    best, _ = pick([candidate(3, 4.6, 0.99, task_drop=3.0), four], 3.0, 0.97, 1.0)
    assert best.depth == 4
    # ... and where none keeps it, the closest ships and the line says so.
    best, why = pick([candidate(3, 4.6, 0.99, 3.0), candidate(4, 3.5, 0.99, 2.0)], 3.0, 0.97,
                     1.0)
    assert best.depth == 4 and why.startswith("NO student kept the labelled tasks within")
    # Without labels (no task drop), or with max_task_drop null, cosine decides as before.
    best, _ = pick([candidate(3, 4.6, 0.929, -2.1), four], 3.0, 0.95, max_task_drop=None)
    assert best.depth == 4


def test_without_labels_the_line_says_what_the_budget_asks_and_what_was_measured():
    _, why = pick([candidate(3, 3.21, 0.9293), candidate(4, 3.05, 0.9516)], 3.0, 0.97)
    assert "\n" not in why
    assert "no class labels on the val texts, so the budget asks val cosine 0.97" in why
    assert "offer 3 layers 0.9293 at 3.21x, 4 layers 0.9516 at 3.05x" in why


def test_the_val_task_drop_is_judged_like_the_gate_judges_test():
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(4), 30)                      # 120 val texts, 4 classes
    centres = rng.standard_normal((4, 16))
    teacher = centres[classes] + 0.8 * rng.standard_normal((120, 16))
    kept = teacher + 0.05 * rng.standard_normal((120, 16))     # a student that keeps the task
    judged, estimate = val_task_drop(teacher, kept, classes)
    assert judged <= 1.0 and judged <= estimate
    # A student that puts a fifth of the texts among another class's: many points lost, more
    # than the interval can forgive.
    moved = teacher.copy()
    moved[::5] = centres[(classes[::5] + 1) % 4] + 0.8 * rng.standard_normal((24, 16))
    assert val_task_drop(teacher, moved, classes)[0] > 3.0
    assert val_task_drop(teacher, kept, np.zeros(120, np.int64)) is None     # no labels


def test_untrained_candidates_are_not_chosen_and_no_fast_candidate_is_an_error():
    best, _ = pick([candidate(2, 7.0, 0.99), candidate(3, 5.0, None)], 3.0, 0.97)
    assert best.depth == 2
    with pytest.raises(SlimlineError, match="no candidate depth runs min_speedup = 9x"):
        pick([candidate(3, 5.0, 0.99)], 9.0, 0.97)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    texts = [row["text"] for row in sentences(64)]
    folder = save_tiny_bert(tmp_path_factory.mktemp("encoder"), texts, task="embedding",
                            layers=4, hidden=32, heads=4)
    model, _, _ = load_pretrained(folder)
    torch.manual_seed(0)   # far from the near-identity layers of a fresh initialisation
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.3)
    return model, tokenize(load_tokenizer(folder), texts, 16)


def test_backward_elimination_keeps_the_last_layer_and_the_best_measured_subsets(encoder):
    model, inputs = encoder
    reference = predict(model, inputs)

    def fidelity_of(candidate_model):
        return embedding_fidelity(reference, predict(candidate_model, inputs))

    chosen = eliminate_layers(model, [2, 3, 9], fidelity_of)
    assert sorted(chosen) == [2, 3]          # 9 is not fewer than the model's 4 layers
    three, two = chosen[3][0], chosen[2][0]
    assert three[-1] == two[-1] == 3 and set(two) < set(three)
    # The 3-layer choice is the best of the three that keep the last layer, as measured.
    scores = {}
    for drop in range(3):
        trial = copy.deepcopy(model)
        keep_encoder_layers(trial, [i for i in range(4) if i != drop])
        scores[drop] = fidelity_of(trial)
    assert chosen[3][1] == pytest.approx(max(scores.values()))
    assert len(encoder_layers(model)[1]) == 4   # the input model is not cut


def test_candidates_are_timed_as_int8_against_the_fp32_teacher(encoder, tmp_path):
    model, inputs = encoder
    example = {name: array[:1] for name, array in inputs.items()}
    example["attention_mask"] = np.ones_like(example["attention_mask"])

    def export(candidate_model, path: Path):
        export_onnx(candidate_model, {k: torch.from_numpy(v) for k, v in example.items()}, path,
                    axes=TEXT_AXES, output_name="sentence_embedding")

    export(model, tmp_path / "teacher.onnx")
    one_layer = copy.deepcopy(model)
    keep_encoder_layers(one_layer, [3])
    speedups = int8_speedups({1: one_layer}, tmp_path / "teacher.onnx", example, export,
                             runs=40, rounds=4, log=lambda _: None)
    assert list(speedups) == [1] and speedups[1] > 1.0   # a quarter of the layers, in int8


def test_the_report_shows_every_candidate_against_the_budgets(tmp_path):
    """The distill stage's flat metrics -> the report's table and plot (shipped depth marked;
    a candidate never trained says so); a night with a fixed student has no such section."""
    from slimline.report.candidates import choice_lines, read_student_choice, student_choice
    from slimline.report.plots import candidates_plot

    metrics = {"student_depth": 3, "student_met_budget": True,
               "student_budget.min_speedup": 3.0, "student_budget.min_fidelity": 0.97,
               "candidate_3_layers.depth": 3, "candidate_3_layers.initial_fidelity": 0.73,
               "candidate_3_layers.speedup": 3.6, "candidate_3_layers.fidelity": 0.975,
               "candidate_4_layers.depth": 4, "candidate_4_layers.initial_fidelity": 0.85,
               "candidate_4_layers.speedup": 2.6, "distilled_val_top1": 0.975}
    (tmp_path / "distill.json").write_text(json.dumps(metrics))
    choice = read_student_choice(tmp_path / "distill.json")
    assert [row["depth"] for row in choice.rows] == [3, 4] and choice.chosen_depth == 3
    table = "\n".join(choice_lines(choice))
    assert "| 3 | 0.7300 | 3.60x | 0.9750 |  | shipped |" in table
    assert "| 4 | 0.8500 | 2.60x | not trained |  |  |" in table
    assert "shipped the fastest depth at least 3x faster" in table
    assert "meets min_fidelity 0.97 in val cosine (no labels)" in table
    missed = student_choice({**metrics, "student_met_budget": False})
    assert "**No candidate met the budget**" in "\n".join(choice_lines(missed))
    # Judged by the val texts' labelled tasks: the budget and each drop in the section.
    labelled = student_choice({**metrics, "student_budget.max_task_drop": 1.0,
                               "candidate_3_layers.task_drop": -0.5})
    table = "\n".join(choice_lines(labelled))
    assert "within 1 points of the teacher" in table and "| 0.9750 | -0.50 points |" in table
    candidates_plot(choice, tmp_path / "candidates.png")
    assert (tmp_path / "candidates.png").read_bytes()[:4] == b"\x89PNG"
    assert student_choice({"enabled": 1, "distilled_val_top1": 0.9}) is None
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SlimlineError, match="broken.json: not the distill stage's metrics"):
        read_student_choice(tmp_path / "broken.json")
