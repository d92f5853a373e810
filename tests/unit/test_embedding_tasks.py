"""What embeddings are for, measured the way MTEB measures it, on cases whose answers are known:
STS Spearman against human scores, a logistic-regression probe and k-NN on class labels."""
import numpy as np
import pytest

from slimline.data.splits import load_pair_scores, save_pair_scores
from slimline.measure.embedding import (
    class_folds,
    knn_accuracy,
    knn_correct,
    probe_accuracy,
    spearman,
    sts_spearman,
)
from slimline.measure.embedding_tasks import task_quality


def at_angles(degrees) -> np.ndarray:
    radians = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], 1)


def test_sts_spearman_orders_pairs_as_people_do():
    # Pair i: a text at 0 degrees and one at 10 * i: the cosine falls as i grows.
    first, second = at_angles([0] * 6), at_angles(10 * np.arange(6))
    people = np.array([5.0, 4.2, 3.0, 2.4, 1.0, 0.0])          # most similar first, as the cosine
    assert sts_spearman(first, second, people) == pytest.approx(1.0)
    assert sts_spearman(first, second, people[::-1]) == pytest.approx(-1.0)
    # Pairs 0 and 1 swapped against people: d^2 = 1 + 1, rho = 1 - 6 * 2 / (6 * 35).
    assert sts_spearman(first, second, people[[1, 0, 2, 3, 4, 5]]) == pytest.approx(1 - 12 / 210)
    # Tied human scores share their mean rank (0-5 scores tie often): 4, 4, 1 rank 1.5, 1.5, 0,
    # which against 2, 1, 0 correlate at sqrt(3) / 2, not 1.
    assert spearman(np.array([3.0, 2.0, 1.0]), np.array([4.0, 4.0, 1.0])) == pytest.approx(
        np.sqrt(3) / 2)


def test_the_probe_separates_separable_classes_and_guesses_random_labels():
    rng = np.random.default_rng(0)
    centres = 3 * rng.standard_normal((3, 16))
    classes = np.repeat(np.arange(3), 40)
    separable = centres[classes] + 0.3 * rng.standard_normal((120, 16))
    assert probe_accuracy(separable, classes) == 1.0
    assert knn_accuracy(separable, classes) == 1.0
    # Labels that have nothing to do with the embeddings: chance (0.5), within the noise of
    # 400 items.
    noise, coin = rng.standard_normal((400, 16)), rng.integers(0, 2, 400)
    assert 0.4 < probe_accuracy(noise, coin) < 0.6
    assert 0.4 < knn_accuracy(noise, coin) < 0.6
    # Class names (strings) work as indices do.
    assert probe_accuracy(separable, np.array(["a", "b", "c"])[classes]) == 1.0


def test_knn_on_a_case_worked_out_by_hand():
    # Class 0 at 0, 10, 20 degrees, class 1 at 25, 90, 100. With k = 1: 20's nearest is 25
    # (class 1: wrong) and 25's is 20 (class 0: wrong); the other four are right.
    points = at_angles([0, 10, 20, 25, 90, 100])
    classes = np.array([0, 0, 0, 1, 1, 1])
    assert knn_accuracy(points, classes, k=1) == pytest.approx(4 / 6)
    # Text by text, so a model's k-NN compares with the teacher's like top-1 correctness.
    assert knn_correct(points, classes, k=1).tolist() == [True, True, False, False, True, True]
    # k = 2, a tie (one vote each) goes to the nearer: 10's nearest are 0 and 20 (right), 25's
    # are 20 and 10 (wrong), 90's are 100 and 25 (right), 20's are 25 and 10: the nearer, 25.
    assert knn_accuracy(points, classes, k=2) == pytest.approx(4 / 6)


def test_every_model_is_probed_on_the_same_stratified_folds():
    classes = np.repeat([0, 1, 2], [50, 30, 20])
    folds = class_folds(classes, 5, seed=0)
    assert (folds == class_folds(classes, 5, seed=0)).all()       # fixed: the same for every model
    for fold in range(5):
        assert np.bincount(classes[folds == fold]).tolist() == [10, 6, 4]


def test_task_scores_only_where_the_data_have_them():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((40, 8))
    assert task_quality(embeddings, np.zeros(40, np.int64)) == {}   # a file without labels
    labelled = task_quality(embeddings, np.repeat([0, 1], 20))
    assert set(labelled) == {"probe_accuracy", "knn_accuracy"}
    pairs = (embeddings[:10], embeddings[10:20], rng.random(10))
    assert set(task_quality(embeddings, None, pairs)) == {"sts_spearman"}


def test_pair_scores_are_stored_beside_the_pairs(tmp_path):
    save_pair_scores(np.array([3.8, 0.0, 5.0]), tmp_path)
    assert load_pair_scores(tmp_path).tolist() == [3.8, 0.0, 5.0]
    assert load_pair_scores(tmp_path / "nowhere") is None      # no pairs, or pairs labelled 1/0
