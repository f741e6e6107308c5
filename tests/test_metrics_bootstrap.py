"""dermbench.metrics: bootstrap CIs, evaluate(), DeLong, paired bootstrap, multi-seed summary."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from dermbench import metrics as M
from dermbench.metrics import _engine
from dermbench.metrics.bootstrap import iter_replicate_weights, replicate_weights


def _scores(n: int, seed: int, *, separation: float = 0.3, prevalence: float = 0.3, decimals=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]
    p = np.clip(rng.normal(0.35 + separation * y, 0.2), 0.0, 1.0)
    return y, (np.round(p, decimals) if decimals is not None else p)


# --- bootstrap ---------------------------------------------------------------------------------

def test_replicates_agree_with_sklearn_on_expanded_data():
    """Each weighted replicate equals scikit-learn on the data with images repeated by their counts."""
    y, p = _scores(80, 0, decimals=2)
    threshold = 0.5
    replicates = M.bootstrap_replicates(y, p, threshold=threshold, n_boot=15, seed=7)
    table = _engine.ScoreTable(y, p)
    weights = np.concatenate(list(iter_replicate_weights(table, None, 15, 7)))
    y_sorted, p_sorted = y[table.order], p[table.order]
    for k in range(15):
        counts = weights[k].astype(int)
        y_k, p_k = np.repeat(y_sorted, counts), np.repeat(p_sorted, counts)
        pred_k = (p_k >= threshold).astype(int)
        if 0 < y_k.sum() < y_k.size:
            assert replicates["auroc"][k] == pytest.approx(skm.roc_auc_score(y_k, p_k), abs=1e-9)
            assert replicates["auprc"][k] == pytest.approx(skm.average_precision_score(y_k, p_k), abs=1e-9)
            assert replicates["pauc"][k] == pytest.approx(M.threshold_free(y_k, p_k)["pauc"], abs=1e-9)
            assert replicates["sens_at_spec90"][k] == pytest.approx(
                M.threshold_free(y_k, p_k)["sens_at_spec90"], abs=1e-9)
            assert replicates["macro_f1"][k] == pytest.approx(
                skm.f1_score(y_k, pred_k, average="macro"), abs=1e-9)
        assert replicates["brier"][k] == pytest.approx(skm.brier_score_loss(y_k, p_k), abs=1e-9)
        assert replicates["ece"][k] == pytest.approx(M.threshold_free(y_k, p_k)["ece"], abs=1e-9)
        assert replicates["accuracy"][k] == pytest.approx(skm.accuracy_score(y_k, pred_k), abs=1e-9)


def test_bootstrap_is_seeded():
    y, p = _scores(300, 1)
    a = M.bootstrap_ci(y, p, threshold=0.5, n_boot=200, seed=3)
    b = M.bootstrap_ci(y, p, threshold=0.5, n_boot=200, seed=3)
    c = M.bootstrap_ci(y, p, threshold=0.5, n_boot=200, seed=4)
    assert dict(a) == dict(b)
    assert a["auroc"] != c["auroc"]
    assert set(a) == set(M.METRIC_NAMES)
    assert a.valid["auroc"] == 200 and a.n_boot == 200 and a.unit == "image"
    low, high = a["auroc"]
    assert low < M.threshold_free(y, p)["auroc"] < high


def test_group_bootstrap_keeps_groups_together():
    group_of_image = np.array([0, 0, 1, 2, 2, 2, 3])
    weights = replicate_weights(np.random.default_rng(0), group_of_image, 4, 50)
    assert weights.shape == (50, 7)
    assert (weights[:, 0] == weights[:, 1]).all()
    assert (weights[:, 3] == weights[:, 4]).all() and (weights[:, 4] == weights[:, 5]).all()
    # 4 groups drawn per replicate: group sizes 2, 1, 3, 1 weighted by draw counts
    draws_per_group = weights[:, [0, 2, 3, 6]]
    assert (draws_per_group.sum(axis=1) == 4).all()


def test_group_bootstrap_wider_than_image_bootstrap_on_duplicated_groups():
    """Three copies of every image: an image bootstrap treats them as independent (too narrow)."""
    y, p = _scores(200, 2)
    copies = 3
    y3, p3 = np.repeat(y, copies), np.repeat(p, copies)
    patient = np.repeat([f"patient_{i}" for i in range(200)], copies)
    image_level = M.bootstrap_ci(y3, p3, threshold=0.5, n_boot=400, seed=0)
    group_level = M.bootstrap_ci(y3, p3, threshold=0.5, groups=patient, n_boot=400, seed=0)
    original = M.bootstrap_ci(y, p, threshold=0.5, n_boot=400, seed=0)
    assert group_level.unit == "group"

    def width(ci, name):
        return ci[name][1] - ci[name][0]

    for name in ("auroc", "brier", "sensitivity", "accuracy"):
        assert width(group_level, name) > 1.3 * width(image_level, name), name
        # the group bootstrap of the copies behaves like the image bootstrap of the originals
        assert width(group_level, name) == pytest.approx(width(original, name), rel=0.35), name


def test_invalid_replicates_are_skipped_and_counted():
    # 2 malignant among 30: about (28/30)^30 = 13% of replicates draw no malignant image
    y = np.array([1, 1] + [0] * 28)
    p = np.linspace(0.05, 0.95, 30)[::-1]
    ci = M.bootstrap_ci(y, p, threshold=0.5, n_boot=500, seed=0)
    assert 350 < ci.valid["auroc"] < 490
    assert ci.valid["sensitivity"] == ci.valid["auroc"]
    assert ci.valid["brier"] == 500 and ci.valid["specificity"] == 500
    assert all(v is None or math.isfinite(v) for pair in ci.values() for v in pair)


def test_bootstrap_speed_1000_replicates_2000_images():
    y, p = _scores(2000, 3)
    start = time.perf_counter()
    M.bootstrap_ci(y, p, threshold=0.5, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 8.0  # ~0.5 s on a 2-core laptop


def test_bootstrap_rejects_bad_options():
    y, p = _scores(20, 4)
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_ci(y, p, threshold=0.5, n_boot=-1)
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(y, p, threshold=0.5, alpha=1.5)
    with pytest.raises(ValueError, match="missing id"):
        M.bootstrap_ci(y, p, threshold=0.5, groups=[None] + ["a"] * 19)
    with pytest.raises(ValueError, match="one id per image"):
        M.bootstrap_ci(y, p, threshold=0.5, groups=["a"] * 3)


# --- evaluate ----------------------------------------------------------------------------------

def test_evaluate_record_is_complete_and_json_serialisable():
    y, p = _scores(150, 5)
    patients = [f"P{i // 2}" for i in range(150)]
    record = M.evaluate(y, p, threshold=0.4, groups=patients, group_unit="patient", n_boot=100, seed=1)
    json.dumps(record, allow_nan=False)
    assert record["n"] == 150 and record["n_malignant"] == int(y.sum())
    assert record["n_benign"] == 150 - int(y.sum())
    assert record["threshold"] == 0.4
    assert list(record["metrics"]) == list(M.METRIC_NAMES)
    assert record["undefined"] == {}
    assert record["bootstrap"]["unit"] == "patient" and record["bootstrap"]["seed"] == 1
    assert record["bootstrap"]["n_boot"] == 100
    assert set(record["bootstrap"]["valid"]) == set(M.METRIC_NAMES)
    op = M.at_threshold(y, p, 0.4)
    assert record["confusion"] == {k: op[k] for k in ("tn", "fp", "fn", "tp")}
    free = M.threshold_free(y, p)
    for name, entry in record["metrics"].items():
        expected = free[name] if name in free else op[name]
        assert entry["value"] == pytest.approx(expected, abs=1e-12)
        assert entry["ci_low"] <= entry["ci_high"]
    assert record["metrics"]["auroc"]["ci_low"] <= free["auroc"] <= record["metrics"]["auroc"]["ci_high"]
    ci = M.bootstrap_ci(y, p, threshold=0.4, groups=patients, n_boot=100, seed=1)
    assert record["metrics"]["auroc"]["ci_low"] == ci["auroc"][0]


def test_evaluate_units_and_no_bootstrap():
    y, p = _scores(40, 6)
    record = M.evaluate(y, p, threshold=0.5, n_boot=0)
    assert record["bootstrap"]["unit"] == "image"
    assert record["metrics"]["auroc"]["ci_low"] is None and record["metrics"]["auroc"]["value"] is not None
    assert M.evaluate(y, p, threshold=0.5, groups=range(40), n_boot=5)["bootstrap"]["unit"] == "group"
    with pytest.raises(ValueError, match="groups is None"):
        M.evaluate(y, p, threshold=0.5, group_unit="patient")
    with pytest.raises(ValueError, match="group_unit"):
        M.evaluate(y, p, threshold=0.5, groups=range(40), group_unit="hospital")


def test_evaluate_single_malignant_class():
    record = M.evaluate([1, 1, 1], [0.2, 0.6, 0.9], threshold=0.5, n_boot=20)
    assert "only malignant" in record["undefined"]["auroc"]
    assert record["metrics"]["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert "specificity" in record["undefined"] and "npv" not in record["undefined"]
    json.dumps(record, allow_nan=False)


# --- DeLong ------------------------------------------------------------------------------------

def _delong_brute_force(y, p_a, p_b):
    """O(n^2) DeLong (1988) with the Heaviside kernel psi (1 above, 1/2 tie)."""
    y = np.asarray(y)
    results = []
    for p in (p_a, p_b):
        x, z = p[y == 1], p[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        results.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = results
    m, n = v10_a.size, v01_a.size
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a, auc_b, math.sqrt(var)


@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_delong_matches_brute_force(decimals):
    y, p_a = _scores(300, 8, decimals=decimals)
    rng = np.random.default_rng(9)
    p_b = np.clip(p_a + rng.normal(0, 0.15, p_a.size), 0, 1)
    if decimals is not None:
        p_b = np.round(p_b, decimals)
    result = M.delong_test(y, p_a, p_b)
    auc_a, auc_b, se = _delong_brute_force(y, p_a, p_b)
    assert result["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert result["auc_a"] == pytest.approx(skm.roc_auc_score(y, p_a), abs=1e-12)
    assert result["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-9)
    z = (auc_a - auc_b) / se
    assert result["z"] == pytest.approx(z, rel=1e-9)
    assert result["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert result["ci_low"] == pytest.approx(result["diff"] - 1.959963984540054 * se, rel=1e-9)


def test_delong_identical_and_different_models():
    y, p = _scores(400, 10, separation=0.35)
    same = M.delong_test(y, p, p.copy())
    assert same["diff"] == 0.0 and same["p_value"] == 1.0 and same["z"] == 0.0
    noise = np.random.default_rng(11).random(p.size)
    different = M.delong_test(y, p, noise)
    assert different["diff"] > 0.2
    assert different["p_value"] < 1e-6
    assert different["ci_low"] > 0
    json.dumps(different, allow_nan=False)
    with pytest.raises(ValueError, match="both classes"):
        M.delong_test([1, 1], [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="differ in length"):
        M.delong_test([0, 1], [0.1, 0.2], [0.3])


# --- paired bootstrap --------------------------------------------------------------------------

def test_paired_bootstrap_identical_and_different_models():
    y, p = _scores(300, 12, separation=0.35)
    same = M.paired_bootstrap(y, p, p.copy(), n_boot=300, seed=0)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0 and same["ci"] == (0.0, 0.0)
    noise = np.random.default_rng(13).random(p.size)
    different = M.paired_bootstrap(y, p, noise, n_boot=300, seed=0)
    assert different["diff"] == pytest.approx(
        skm.roc_auc_score(y, p) - skm.roc_auc_score(y, noise), abs=1e-12)
    assert different["ci_low"] > 0 and different["p_value"] < 0.01
    assert different["valid"] == 300 and different["unit"] == "image"
    json.dumps(different, allow_nan=False)
    # the same seed resamples the same images for both models: reproducible
    assert M.paired_bootstrap(y, p, noise, n_boot=300, seed=0) == different


def test_image_bootstrap_is_paired_across_models():
    # Regression: the image-level resample was indexed by score rank, so two models with different
    # score orders were resampled on different images. AUROC(y, 1 - p) == 1 - AUROC(y, p) holds on
    # every resample only if both see the same images.
    y, p = _scores(200, 21)
    a = M.bootstrap_replicates(y, p, threshold=None, n_boot=50, seed=1)["auroc"]
    b = M.bootstrap_replicates(y, 1.0 - p, threshold=None, n_boot=50, seed=1)["auroc"]
    np.testing.assert_allclose(a, 1.0 - b, atol=1e-12)
    flipped = M.paired_bootstrap(y, p, 1.0 - p, n_boot=50, seed=1)
    np.testing.assert_allclose(flipped["ci_low"], 2 * np.quantile(a, 0.025) - 1, atol=1e-9)


def test_paired_bootstrap_threshold_metric_and_groups():
    y, p = _scores(200, 14)
    result = M.paired_bootstrap(y, p, p, metric="sensitivity", threshold_a=0.3, threshold_b=0.6,
                                groups=np.arange(200) // 4, n_boot=200, seed=1)
    expected = M.at_threshold(y, p, 0.3)["sensitivity"] - M.at_threshold(y, p, 0.6)["sensitivity"]
    assert result["diff"] == pytest.approx(expected)
    assert result["ci_low"] >= 0  # a lower threshold can only raise sensitivity
    assert result["unit"] == "group"
    with pytest.raises(ValueError, match="unknown metric"):
        M.paired_bootstrap(y, p, p, metric="f1")


# --- multi-seed --------------------------------------------------------------------------------

def test_multi_seed_summary():
    summary = M.multi_seed_summary([0.8, 0.9, 1.0])
    assert summary["mean"] == pytest.approx(0.9) and summary["sd"] == pytest.approx(0.1)
    assert summary["n"] == 3
    assert M.multi_seed_summary([0.7]) == {"mean": 0.7, "sd": None, "n": 1}
    assert M.multi_seed_summary([0.7, None, float("nan"), 0.9])["n"] == 2
    assert M.multi_seed_summary([]) == {"mean": None, "sd": None, "n": 0}
