"""The embedding gate judges the task the data label (issue 31): each labelled task's drop
against the teacher, at the favourable end of its paired interval, within max_task_drop. A
student that keeps the task passes at the cosine a distilled student really has; one that loses
3 points fails whatever its cosine; cosine and recall@10 still judge where no task is labelled
and the teacher's own network (the quantize path). Labelled retrieval (queries with relevance
labels) is scored against the labels and judged the same way."""
import numpy as np
import pytest

from slimline.config.params import GateParams
from slimline.data.splits import Split, load_retrieval, save_retrieval
from slimline.errors import SlimlineError
from slimline.measure.embedding_tasks import retrieval_scores, task_differences
from slimline.measure.stats import paired_difference
from slimline.report.gate import check_budgets

TEXTS = 1000


def at_angles(degrees) -> np.ndarray:
    radians = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], 1)


def correct_flips(lost: int, gained: int, teacher_right: int = 787):
    """(teacher, model) per-text correctness: the teacher right on 787 of 1,000 texts (MiniLM's
    probe on the bench's corpus), the model losing `lost` of them and gaining `gained` others."""
    teacher = np.arange(TEXTS) < teacher_right
    model = teacher.copy()
    model[:lost] = False
    model[teacher_right:teacher_right + gained] = True
    return teacher, model


def sts_cosines(noise: float, seed: int):
    """(human scores, the teacher's pair cosines, a model's): the model's cosines are the
    teacher's with `noise` added, so the more noise, the less it orders pairs as people do."""
    rng = np.random.default_rng(seed)
    human = rng.integers(0, 26, TEXTS) / 5.0                 # 0-5 in steps of 0.2, as STS
    teacher = human / 5 + 0.15 * rng.standard_normal(TEXTS)
    return human, teacher, teacher + noise * rng.standard_normal(TEXTS)


def row(teacher_items: dict, model_items: dict, human=None, *, cosine: float, recall10: float):
    """The shipped model's evaluation row as slimline/measure/evaluation.py writes it."""
    values = {"cos_mean": cosine, "recall10": recall10}
    for key, difference in task_differences(teacher_items, model_items, human).items():
        values.update({f"{key}_diff": difference.difference, f"{key}_diff_low": difference.low,
                       f"{key}_diff_high": difference.high})
    return values


def gate(values: dict, *, student: bool = True, settings: GateParams | None = None) -> dict:
    unchanged = paired_difference(np.ones(TEXTS, bool), np.ones(TEXTS, bool))
    checks = check_budgets(settings or GateParams(), unchanged, 1.0, 1.0, 1.0,
                           judged="nn@1 agreement", embeddings=values, student=student)
    return {check.name: check for check in checks}


def test_a_student_that_keeps_the_labelled_task_passes_at_a_students_cosine():
    # MiniLM's 3-layer student on the bench: cosine 0.929, recall@10 0.593, probe +0.6 points.
    teacher, student = correct_flips(lost=30, gained=36)
    checks = gate(row({"probe_accuracy": teacher, "knn_accuracy": teacher},
                      {"probe_accuracy": student, "knn_accuracy": student},
                      cosine=0.929, recall10=0.593))
    assert list(checks) == ["probe accuracy drop vs teacher", "k-NN accuracy drop vs teacher"]
    assert all(check.passed for check in checks.values())
    assert checks["probe accuracy drop vs teacher"].measured == pytest.approx(-0.6)


@pytest.mark.parametrize("task", ["probe_accuracy", "knn_accuracy"])
def test_a_student_that_loses_3_points_of_a_task_fails_whatever_its_cosine(task):
    teacher, kept = correct_flips(lost=10, gained=10)
    _, lost = correct_flips(lost=40, gained=10)                       # 3 points down
    items = {"probe_accuracy": (teacher, kept), "knn_accuracy": (teacher, kept)}
    items[task] = (teacher, lost)
    checks = gate(row({key: pair[0] for key, pair in items.items()},
                      {key: pair[1] for key, pair in items.items()},
                      cosine=0.999, recall10=0.99))
    failed = [name for name, check in checks.items() if not check.passed]
    assert failed == [f"{'probe' if task == 'probe_accuracy' else 'k-NN'} accuracy drop vs teacher"]
    assert checks[failed[0]].measured == pytest.approx(3.0)
    assert checks[failed[0]].judged > 1.0          # even the favourable end drops > 1 point


def test_sts_spearman_judged_both_ways_on_a_bootstrap_interval():
    human, teacher, kept = sts_cosines(noise=0.01, seed=0)
    good = gate(row({"sts_spearman": teacher}, {"sts_spearman": kept}, human,
                    cosine=0.93, recall10=0.6))
    assert list(good) == ["STS Spearman drop vs teacher"] and good[
        "STS Spearman drop vs teacher"].passed
    human, teacher, noisy = sts_cosines(noise=0.12, seed=0)
    bad = gate(row({"sts_spearman": teacher}, {"sts_spearman": noisy}, human,
                   cosine=0.999, recall10=0.99))["STS Spearman drop vs teacher"]
    assert bad.measured > 3.0 and not bad.passed


def test_cosine_and_recall_judge_where_no_task_is_judged_and_the_teachers_own_network():
    teacher, kept = correct_flips(lost=30, gained=36)
    labelled = row({"probe_accuracy": teacher}, {"probe_accuracy": kept}, cosine=0.929,
                   recall10=0.593)
    # The quantize path: the teacher's network as int8 keeps 0.97 / 0.8 even with labels.
    quantized = gate(labelled, student=False)
    assert quantized["probe accuracy drop vs teacher"].passed
    assert not quantized["embedding fidelity"].passed
    assert not quantized["retrieval recall@10"].passed
    # No labels, or tasks not judged (max_task_drop null): the student is judged by cosine.
    unlabelled = gate({"cos_mean": 0.929, "recall10": 0.593})
    assert list(unlabelled) == ["embedding fidelity", "retrieval recall@10"]
    assert not unlabelled["embedding fidelity"].passed
    untasked = gate(labelled, settings=GateParams(max_task_drop=None))
    assert list(untasked) == ["embedding fidelity", "retrieval recall@10"]


def test_the_point_rule_judges_the_estimate():
    # 1.5 points down on 15 flips: the interval's favourable end is within 1 point, the
    # estimate is not.
    teacher, student = correct_flips(lost=15, gained=0)
    values = row({"probe_accuracy": teacher}, {"probe_accuracy": student}, cosine=0.93,
                 recall10=0.6)
    assert gate(values)["probe accuracy drop vs teacher"].passed
    assert not gate(values, settings=GateParams(rule="point"))[
        "probe accuracy drop vs teacher"].passed


def test_retrieval_against_relevance_labels_on_a_case_worked_out_by_hand():
    # Corpus texts at 0, 20, 45, 90 degrees; query A at 8 (relevant: 20 graded 2, 90 graded 1),
    # query B at 80 (relevant: 90); query C has no relevant text and is not judged.
    corpus, queries = at_angles([0, 20, 45, 90]), at_angles([8, 80, 30])
    relevance = np.array([[0, 2, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    scores = retrieval_scores(queries, corpus, relevance, k=2)
    # A ranks 0 then 20: DCG = 3 / log2(3), the ideal
    # 3 + 1 / log2(3); one of its two relevant texts in the top 2. B ranks 90 first.
    ideal = 3 + 1 / np.log2(3)
    assert scores["ndcg_at_10"] == pytest.approx([3 / np.log2(3) / ideal, 1.0])
    assert scores["labelled_recall_at_10"] == pytest.approx([0.5, 1.0])


def test_a_student_that_loses_3_points_of_ndcg_fails_whatever_its_cosine():
    rng = np.random.default_rng(0)
    teacher = {"ndcg_at_10": rng.uniform(0.4, 1.0, 500),
               "labelled_recall_at_10": rng.uniform(0.4, 1.0, 500)}
    kept = {key: values + rng.normal(0, 0.02, 500) for key, values in teacher.items()}
    good = gate(row(teacher, kept, cosine=0.929, recall10=0.593))
    assert list(good) == ["nDCG@10 (labels) drop vs teacher", "recall@10 (labels) drop vs teacher"]
    assert all(check.passed for check in good.values())
    lost = {**kept, "ndcg_at_10": teacher["ndcg_at_10"] - 0.03 + rng.normal(0, 0.02, 500)}
    bad = gate(row(teacher, lost, cosine=0.999, recall10=0.99))
    assert not bad["nDCG@10 (labels) drop vs teacher"].passed
    assert bad["recall@10 (labels) drop vs teacher"].passed


def test_relevance_labels_beside_the_splits(tmp_path):
    queries = Split({"input_ids": np.ones((3, 4), np.int64)}, np.zeros(3, np.int64))
    corpus = Split({"input_ids": np.ones((5, 4), np.int64)}, np.zeros(5, np.int64))
    assert load_retrieval(tmp_path) is None
    save_retrieval(queries, corpus, np.eye(3, 5), tmp_path)
    loaded = load_retrieval(tmp_path)
    assert (len(loaded[0]), len(loaded[1])) == (3, 5) and (loaded[2] == np.eye(3, 5)).all()
    save_retrieval(queries, corpus, np.eye(3, 4), tmp_path)
    with pytest.raises(SlimlineError, match=r"relevance of shape \(3, 4\) for 3 queries and 5"):
        load_retrieval(tmp_path)
