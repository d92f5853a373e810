"""Interval code against scipy's exact binomial test; the gate does not flap; noise is flagged."""
import numpy as np
import pytest
from scipy.stats import binomtest

from slimline.config.params import GateParams
from slimline.measure.lineage import sha256_file
from slimline.measure.stats import (
    RatioSpread,
    paired_bootstrap,
    paired_difference,
    smallest_detectable_difference,
    speedup_spread,
    too_noisy,
)
from slimline.report.gate import check_budgets


def outcomes(items, lost, gained):
    reference = np.ones(items, bool)
    reference[:gained] = False
    model = reference.copy()
    model[:gained] = True
    model[gained:gained + lost] = False
    return reference, model


def test_interval_matches_exact_binomial_reference():
    reference, model = outcomes(1000, lost=12, gained=4)
    paired = paired_difference(reference, model)
    ci = binomtest(4, 16).proportion_ci(0.95, method="exact")
    assert (paired.gained, paired.lost) == (4, 12)
    assert paired.difference == pytest.approx(-0.008)
    assert paired.low == pytest.approx(16 * (2 * ci.low - 1) / 1000)
    assert paired.high == pytest.approx(16 * (2 * ci.high - 1) / 1000)
    assert paired.p_value == pytest.approx(binomtest(4, 16, 0.5).pvalue)


def test_no_flips_means_no_difference():
    paired = paired_difference(np.ones(50, bool), np.ones(50, bool))
    assert (paired.difference, paired.low, paired.high, paired.p_value) == (0, 0, 0, 1)


def test_paired_bootstrap_cancels_what_both_models_share():
    # Two scores that differ by a constant on every item: every resample sees the same
    # difference, however much the items themselves vary.
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(300)
    model = reference - 0.02
    shared = paired_bootstrap(lambda items: model[items].mean() - reference[items].mean(), 300)
    assert (shared.difference, shared.low, shared.high) == pytest.approx((-0.02, -0.02, -0.02))
    # Independent noise on the model's side: the interval widens around the estimate.
    noisy = model + 0.5 * rng.standard_normal(300)
    spread = paired_bootstrap(lambda items: noisy[items].mean() - reference[items].mean(), 300)
    assert spread.low < spread.difference < spread.high
    assert spread.high - spread.low == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(300), rel=0.2)


def test_smallest_detectable_difference_on_1000_items():
    # 5 one-way flips: p = 2/32 = 0.0625 (not significant); 6: p = 0.03125.
    assert smallest_detectable_difference(1000) == pytest.approx(0.006)


def test_two_item_difference_never_flips_default_gate():
    gate = GateParams()
    for gained in range(0, 20):
        reference, model = outcomes(1000, lost=gained + 2, gained=gained)
        checks = check_budgets(gate, paired_difference(reference, model), 1.0, 1.0, 1.0)
        assert all(check.passed for check in checks)


def test_real_regression_fails_default_gate_but_point_rule_flaps():
    reference, model = outcomes(1000, lost=40, gained=5)
    checks = check_budgets(GateParams(), paired_difference(reference, model), 1.0, 1.0, 1.0)
    assert not checks[0].passed and checks[0].margin < 0
    reference, model = outcomes(1000, lost=6, gained=0)  # 0.6 point: point rule fails on 6 items
    point = check_budgets(GateParams(rule="point"), paired_difference(reference, model), 1, 1, 1)
    assert not point[0].passed


def test_latency_size_and_throughput_budgets():
    gate = GateParams(max_latency_ms=2.0, max_size_mb=1.0, min_throughput=100.0)
    reference, model = outcomes(100, 0, 0)
    checks = {c.name: c for c in check_budgets(gate, paired_difference(reference, model),
                                                latency_ms=2.5, size_mb=0.5, throughput=150.0)}
    assert not checks["batch-1 latency p50"].passed
    assert checks["batch-1 latency p50"].margin == pytest.approx(-0.5)
    assert checks["ONNX file size"].passed and checks["batch throughput"].passed


def test_relative_budgets_judge_size_and_speed_against_the_teacher():
    gate = GateParams(max_size_ratio=0.125, min_speedup=3.0)
    reference, model = outcomes(100, 0, 0)
    checks = {c.name: c for c in check_budgets(gate, paired_difference(reference, model), 1.0, 1.0,
                                                1.0, size_ratio=0.1, speedup=2.5)}
    assert checks["size vs teacher"].passed
    assert not checks["speed-up vs teacher"].passed
    assert checks["speed-up vs teacher"].margin == pytest.approx(-0.5)
    unset = check_budgets(GateParams(), paired_difference(reference, model), 1.0, 1.0, 1.0,
                          size_ratio=0.9, speedup=0.5)
    assert [check.name for check in unset] == ["top-1 drop vs teacher"]


def embeddings_at_cosine(reference, cosine, seed=0):
    """`reference`'s rows turned by the angle whose cosine is `cosine`, each in a random
    direction orthogonal to it: every row's cosine to its reference is exactly `cosine`."""
    rng = np.random.default_rng(seed)
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    noise = rng.standard_normal(unit.shape)
    noise -= (noise * unit).sum(1, keepdims=True) * unit
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return cosine * unit + np.sqrt(1 - cosine ** 2) * noise


def embedding_checks(cosine, gate=None):
    from slimline.measure.embedding import embedding_quality

    rng = np.random.default_rng(1)
    # 500 texts in 50 topics: close neighbours, as real sentences have.
    teacher = np.repeat(rng.standard_normal((50, 64)), 10, 0) + 0.5 * rng.standard_normal(
        (500, 64))
    quality = embedding_quality(teacher, embeddings_at_cosine(teacher, cosine))
    reference, model = outcomes(500, lost=75, gained=0)     # nn@1 down 15 points, as int8's
    checks = check_budgets(gate or GateParams(), paired_difference(reference, model), 1.0, 1.0,
                           1.0, judged="nn@1 agreement", embeddings=quality)
    return {check.name: check for check in checks}, quality


def test_the_default_embedding_gate_passes_cosine_099_and_fails_090():
    good, quality = embedding_checks(0.99)
    assert quality["cos_mean"] == pytest.approx(0.99) and quality["recall10"] > 0.8
    assert list(good) == ["embedding fidelity", "retrieval recall@10"]   # nn@1: not judged
    assert all(check.passed for check in good.values())
    bad, quality = embedding_checks(0.90)
    assert not bad["embedding fidelity"].passed
    assert bad["embedding fidelity"].margin == pytest.approx(0.90 - 0.97)


def test_each_embedding_budget_fails_alone():
    # recall@10: cosine 0.99 passes the default 0.8, not a budget above what it measured.
    checks, quality = embedding_checks(0.99, GateParams(min_recall_at_10=0.999))
    assert checks["embedding fidelity"].passed and not checks["retrieval recall@10"].passed
    assert checks["retrieval recall@10"].measured == pytest.approx(quality["recall10"])
    # With the default budgets, a model that keeps cosine 0.98 but not the neighbours: on texts
    # spread without topics, each text's 10 nearest are barely nearer than the rest, and the
    # same turn moves most of them out (recall@10 about 0.71).
    from slimline.measure.embedding import embedding_quality

    spread = np.random.default_rng(1).standard_normal((500, 64))
    lost = embedding_quality(spread, embeddings_at_cosine(spread, 0.98))
    reference, model = outcomes(500, 0, 0)
    checks = {check.name: check for check in check_budgets(
        GateParams(), paired_difference(reference, model), 1.0, 1.0, 1.0,
        judged="nn@1 agreement", embeddings=lost)}
    assert checks["embedding fidelity"].passed and not checks["retrieval recall@10"].passed
    # The nn@1 drop, judged only where a budget is set: 15 points lost fail 10, pass 20.
    strict, _ = embedding_checks(0.99, GateParams(max_nn1_drop=10.0))
    loose, _ = embedding_checks(0.99, GateParams(max_nn1_drop=20.0))
    assert not strict["nn@1 agreement drop vs teacher"].passed
    assert loose["nn@1 agreement drop vs teacher"].passed
    # A classifier is judged on top-1 alone: the embedding budgets do not apply.
    reference, model = outcomes(100, 0, 0)
    classifier = check_budgets(GateParams(), paired_difference(reference, model), 1.0, 1.0, 1.0)
    assert [check.name for check in classifier] == ["top-1 drop vs teacher"]


def test_noisy_machine_warning_from_constructed_timings():
    rng = np.random.default_rng(0)
    steady_ref = [np.full(50, 2.0) + rng.normal(0, 0.01, 50) for _ in range(8)]
    steady_model = [np.full(50, 1.0) + rng.normal(0, 0.005, 50) for _ in range(8)]
    spread = speedup_spread(steady_ref, steady_model)
    assert spread.median == pytest.approx(2.0, rel=0.02) and not too_noisy(spread, 0.25)
    # A burst of load during two rounds of the model only: the ratio swings.
    noisy_model = [m * (3.0 if index in (2, 5) else 1.0) for index, m in enumerate(steady_model)]
    assert too_noisy(speedup_spread(steady_ref, noisy_model), 0.25)
    assert too_noisy(RatioSpread(2.0, 1.5, 2.6, 0.55), 0.25)


def test_sha256_of_a_known_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_night_over_night_is_paired_on_the_same_items(tmp_path):
    from slimline.report.trend import compare_nights, predictions_record, trend_section

    labels = np.arange(100) % 10
    before = labels.copy()
    before[:3] = (labels[:3] + 1) % 10            # previous night: 3 wrong
    after = labels.copy()
    after[90:98] = (labels[90:98] + 1) % 10  # tonight: those 3 fixed, 8 others broken
    text = compare_nights(
        predictions_record(labels, before, "h"), predictions_record(labels, after, "h")
    )
    assert "-5.0 points" in text and "3 test items gained, 8 lost" in text
    assert "cannot be paired" in compare_nights(predictions_record(labels, before, "a"),
                                                predictions_record(labels, after, "b"))
    # evaluate's flat metrics hold the gate as a number, 1 or 0; a night before the gate has none
    section = trend_section([("nightly/2026-11-25", {"quantized.top1": 0.99}),
                             ("nightly/2026-11-26", {"quantized.top1": 0.98, "gate_passed": 1}),
                             ("nightly/2026-11-27", {"quantized.top1": 0.97, "gate_passed": 0})],
                            tmp_path / "trend.png")
    assert "| nightly/2026-11-27 | 97.000 | – | – | – | fail |" in section
    assert "| nightly/2026-11-26 | 98.000 | – | – | – | pass |" in section
    assert "| nightly/2026-11-25 | 99.000 | – | – | – | – |" in section
    assert (tmp_path / "trend.png").read_bytes()[:4] == b"\x89PNG"


def test_labels_of_models_on_the_same_point_are_stacked():
    from slimline.report.plots import label_lifts

    # decomposed, distilled (a copy on the same point), quantized (left of them at the same
    # accuracy: its label runs into theirs), the teacher (elsewhere), then one near the first
    points = [(1.336, 98.0), (1.336, 98.0), (0.784, 98.0), (4.9, 98.1), (1.30, 98.0)]
    assert label_lifts(points) == [0, 1, 2, 0, 3]
    # the 2026-11-29 night: quantized 0.27 ms left of decomposed on a 2.7 ms axis overprinted
    teacher, pruned, decomposed, quantized = (
        (2.343, 98.0),
        (0.538, 98.3),
        (0.513, 98.2),
        (0.240, 98.2),
    )
    assert label_lifts([teacher, pruned, decomposed, quantized]) == [0, 0, 0, 1]
    # a label takes the lowest free line: C collides with B only, so it goes back to A's line
    far, a, b, c = (10.0, 1.0), (0.0, 1.0), (1.5, 1.0), (3.0, 1.0)  # axis 11.5: labels 1.7 wide
    assert label_lifts([far, a, b, c]) == [0, 0, 1, 0]
