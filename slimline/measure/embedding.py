"""Embedding fidelity: how close a compressed encoder's sentence embeddings stay to the teacher's.

For an encoder without a task head, top-1 means nothing; what a user relies on is that the
compressed model places each text where the teacher did, and ranks texts as the teacher did:

* cosine mean / min: of each text's embedding to the teacher's embedding of the same text;
* nn@1 agreement: each test text's nearest neighbour among the other test texts (cosine) is the
  one the teacher finds (item by item, so two models compare like top-1 correctness);
* recall@10: of each test text's 10 nearest other test texts under the teacher, the share that
  are among its 10 nearest under the model (retrieval agreement: what search results keep);
* MRR: the mean of 1 / the rank, under the model, of each text's nearest other text under the
  teacher (1: always first);
* Spearman: rank correlation of all pairwise similarities, the model's against the teacher's;
* with labelled pairs, that similar pairs still score above dissimilar ones (pair accuracy at the
  best cosine threshold, per model, as sentence-embedding benchmarks report it).

What the embeddings are for, where the data have labels, measured as MTEB measures it (each model
on its own, the teacher beside it, on the same texts and folds):

* pairs scored by people (STS): the Spearman of each pair's cosine against its human score;
* class labels: the accuracy of a logistic-regression probe on the frozen embeddings
  (cross-validated on stratified folds fixed by a seed) and of cosine k-NN (leave one out).

A text retrieving its own teacher embedding is passed by nearly every model, even a poor one, so
it is not measured.

numpy only at import (the probe imports scipy inside): evaluate and quantize use this module
without the training stack.
"""
from __future__ import annotations

import numpy as np


def cosine_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `first` with the same row of `second`."""
    return np.sum(unit_rows(first) * unit_rows(second), axis=1)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Per row, the index of its most similar other row (cosine)."""
    return _similarities(embeddings).argmax(1)


def _similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows, a row with itself at -inf (never its own
    neighbour)."""
    similarities = unit_rows(embeddings) @ unit_rows(embeddings).T
    np.fill_diagonal(similarities, -np.inf)
    return similarities


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean over texts of |reference's k nearest other texts ∩ candidate's k nearest| / k."""
    k = min(k, len(reference) - 1)
    if k < 1:
        return 1.0
    wanted = np.argsort(-_similarities(reference), axis=1, kind="stable")[:, :k]
    found = np.argsort(-_similarities(candidate), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(wanted, found)]))


def mrr_of_nearest(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean reciprocal rank, in the candidate's ranking of the other texts, of each text's
    nearest other text under the reference."""
    if len(reference) < 2:
        return 1.0
    nearest = nearest_neighbours(reference)
    similarities = _similarities(candidate)
    rows = np.arange(len(reference))
    ranks = 1 + (similarities > similarities[rows, nearest][:, None]).sum(1)
    return float(np.mean(1.0 / ranks))


def nn1_agreement(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per text, whether its nearest other text under the candidate is the reference's."""
    return nearest_neighbours(reference) == nearest_neighbours(candidate)


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks   # float similarities practically never tie; ties get consecutive ranks


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, tied values sharing their mean rank (human scores tie often: 0-5 in steps)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.concatenate([starts[1:], [len(values)]])
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends - 1) / 2, ends - starts)
    return ranks


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation (ties at their mean rank); 0 when either side is constant."""
    first, second = _average_ranks(first), _average_ranks(second)
    if len(first) < 2 or first.std() == 0 or second.std() == 0:
        return 0.0
    return float(np.corrcoef(first, second)[0, 1])


def sts_spearman(embeddings_a: np.ndarray, embeddings_b: np.ndarray,
                 human_scores: np.ndarray) -> float:
    """Semantic textual similarity as MTEB scores it: the Spearman of each pair's cosine against
    the similarity people gave the pair (1: the model orders the pairs as people do)."""
    return spearman(cosine_rows(embeddings_a, embeddings_b), human_scores)


def class_folds(labels: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each item's fold (0..folds-1), stratified (every class spread across the folds) and fixed
    by `seed`: every model's probe is trained and tested on the same texts."""
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    fold = np.empty(len(labels), np.int64)
    fold[order] = np.arange(len(labels)) % folds
    return fold


def _fit_logistic(features: np.ndarray, classes: np.ndarray, count: int,
                  regularization: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) of multinomial logistic regression, L2 on the weights: sum of the
    cross-entropy + regularization / 2 x |W|^2 (scikit-learn's C = 1 / regularization)."""
    from scipy.optimize import minimize

    dims = features.shape[1]
    onehot = np.eye(count)[classes]

    def loss(flat):
        weights, bias = flat[:dims * count].reshape(dims, count), flat[dims * count:]
        logits = features @ weights + bias
        logits -= logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        error = np.exp(log_p) - onehot
        value = -(onehot * log_p).sum() + 0.5 * regularization * (weights ** 2).sum()
        gradient = np.concatenate([(features.T @ error + regularization * weights).ravel(),
                                   error.sum(0)])
        return value, gradient

    found = minimize(loss, np.zeros(dims * count + count), jac=True, method="L-BFGS-B",
                     options={"maxiter": iterations})
    return found.x[:dims * count].reshape(dims, count), found.x[dims * count:]


def probe_correct(embeddings: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
                  regularization: float = 1.0, iterations: int = 100) -> np.ndarray:
    """Per text, whether a logistic-regression probe on the frozen (unit) embeddings classifies
    it right, each fold predicted by a probe fitted on the other folds (class_folds: the same for
    every model, so two models compare text by text, like top-1 correctness); its mean is MTEB's
    classification score (scikit-learn's LogisticRegression, C = 1, 100 iterations)."""
    names, classes = np.unique(labels, return_inverse=True)
    features = unit_rows(np.asarray(embeddings, dtype=np.float64))
    fold = class_folds(classes, folds, seed)
    correct = np.zeros(len(labels), bool)
    for held_out in range(folds):
        test = fold == held_out
        if not test.any():
            continue
        weights, bias = _fit_logistic(features[~test], classes[~test], len(names),
                                      regularization, iterations)
        correct[test] = (features[test] @ weights + bias).argmax(1) == classes[test]
    return correct


def probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, **settings) -> float:
    """The probe's accuracy (probe_correct)."""
    return float(probe_correct(embeddings, labels, **settings).mean())


def knn_correct(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Per text, whether cosine k-NN classifies it right, leave one out: the majority class of
    its k nearest other texts (a tie goes to the class of the nearer neighbours)."""
    names, classes = np.unique(labels, return_inverse=True)
    k = min(k, len(labels) - 1)
    if k < 1:
        return np.zeros(len(labels), bool)
    nearest = np.argsort(-_similarities(embeddings), axis=1, kind="stable")[:, :k]
    # One vote each, plus less than one vote in all for the nearer ones (ties only).
    weights = 1 + (k - np.arange(k)) / (k * k + 1)
    votes = np.zeros((len(labels), len(names)))
    np.add.at(votes, (np.arange(len(labels))[:, None], classes[nearest]), weights)
    return votes.argmax(1) == classes


def knn_accuracy(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out accuracy of cosine k-NN (knn_correct)."""
    return float(knn_correct(embeddings, labels, k).mean())


def pair_similarity_spearman(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Spearman rank correlation of all pairwise cosine similarities (each pair once)."""
    upper = np.triu_indices(len(reference), 1)
    first = _ranks((unit_rows(reference) @ unit_rows(reference).T)[upper])
    second = _ranks((unit_rows(candidate) @ unit_rows(candidate).T)[upper])
    if len(first) < 2:
        return 1.0
    return float(np.corrcoef(first, second)[0, 1])


def embedding_quality(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """The headline numbers of an embedding model against the reference's embeddings."""
    cosines = _paired_cosines(reference, candidate)
    return {"cos_mean": float(cosines.mean()), "cos_min": float(cosines.min()),
            "nn1": float(nn1_agreement(reference, candidate).mean()),
            "recall10": recall_at_k(reference, candidate, 10),
            "mrr": mrr_of_nearest(reference, candidate),
            "spearman": pair_similarity_spearman(reference, candidate)}


def embedding_fidelity(teacher: np.ndarray, student: np.ndarray) -> float:
    """Mean cosine similarity of the student's embeddings to the teacher's (1.0 = identical)."""
    return float(_paired_cosines(teacher, student).mean())


def _paired_cosines(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    if teacher.shape != student.shape:
        raise ValueError(
            f"embedding shapes differ: teacher {teacher.shape}, student {student.shape}"
        )
    return cosine_rows(teacher, student)


def best_threshold_accuracy(similarities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold): pairs with similarity >= threshold are called similar (label 1);
    the threshold is the one that classifies these pairs best."""
    order = np.argsort(-similarities)
    sorted_labels = labels[order]
    # Calling the top k pairs similar: correct = positives among them + negatives below them.
    positives_above = np.concatenate([[0], np.cumsum(sorted_labels)])
    negatives_below = (len(labels) - labels.sum()) - np.concatenate(
        [[0], np.cumsum(1 - sorted_labels)]
    )
    correct = positives_above + negatives_below
    best = int(np.argmax(correct))
    sorted_similarities = similarities[order]
    threshold = (float(sorted_similarities[best - 1]) if best > 0
                 else float(sorted_similarities[0]) + 1e-6)
    return float(correct[best] / len(labels)), threshold


def pair_correct(embeddings_a: np.ndarray, embeddings_b: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Per pair, whether the model judges it right at its best threshold (so two models can be
    compared pair by pair, like top-1 correctness), and that threshold."""
    similarities = cosine_rows(embeddings_a, embeddings_b)
    _, threshold = best_threshold_accuracy(similarities, labels)
    return (similarities >= threshold) == (labels == 1), threshold


def embedding_outcomes(
    reference: np.ndarray, candidate: np.ndarray, pairs=None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of an embedding model's judged task, so it can be compared with the
    teacher item by item like a classifier: with labelled pairs `(embeddings a, embeddings b,
    labels)`, similar (1) / dissimilar (0) at its best threshold; without, whether each test
    text's nearest other test text is the teacher's (nn@1 agreement: 1) or not (0)."""
    if pairs is not None:
        first, second, labels = pairs
        correct, _ = pair_correct(first, second, labels)
        return labels, np.where(correct, labels, 1 - labels)
    hits = nn1_agreement(reference, candidate).astype(np.int64)
    return np.ones_like(hits), hits
