"""Post-hoc calibration (issue 13): the fitting functions, and a calibrated probe cell end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dermbench.metrics import threshold_free
from dermbench.metrics.calibration import Calibrator, calibration_change, fit_calibrator, logit, reliability_table


def overconfident_scores(n: int, seed: int, sharpen: float = 4.0):
    """Labels drawn from a calibrated score, and that score sharpened in logit space: the
    sharpened score ranks images the same way but is far too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.8, 1.2, size=n)
    p_true = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p_true).astype(int)
    return y, 1 / (1 + np.exp(-sharpen * z))


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_each_method_lowers_the_ece_of_an_overconfident_score(method):
    y_val, p_val = overconfident_scores(1500, seed=0)
    y_test, p_test = overconfident_scores(1500, seed=1)
    calibrator = fit_calibrator(method, y_val, p_val)
    for y, p in ((y_val, p_val), (y_test, p_test)):
        change = calibration_change(y, p, calibrator.apply(p))
        assert change["ece_after"] < 0.5 * change["ece_before"], (method, change)
        assert change["brier_after"] < change["brier_before"], (method, change)
    # a stored calibrator applies exactly as the fitted one
    again = Calibrator.from_record(json.loads(json.dumps(calibrator.as_record())))
    assert np.array_equal(again.apply(p_test), calibrator.apply(p_test))


def test_temperature_recovers_the_sharpening_and_keeps_the_ranking():
    y, p = overconfident_scores(4000, seed=2, sharpen=4.0)
    calibrator = fit_calibrator("temperature", y, p)
    assert calibrator.params["temperature"] == pytest.approx(4.0, rel=0.15)
    q = calibrator.apply(p)
    assert threshold_free(y, q)["auroc"] == pytest.approx(threshold_free(y, p)["auroc"], abs=1e-12)
    assert np.all(np.diff(q[np.argsort(p)]) >= 0)  # order-preserving


def test_platt_is_the_maximum_likelihood_fit_on_the_logit():
    y, p = overconfident_scores(800, seed=3)
    c = fit_calibrator("platt", y, p)
    z = logit(p)

    def nll(a, b):
        s = a * z + b
        return float(np.mean(np.logaddexp(0, s) - y * s))

    best = nll(c.params["slope"], c.params["intercept"])
    for da, db in ((0.02, 0), (-0.02, 0), (0, 0.02), (0, -0.02)):
        assert best <= nll(c.params["slope"] + da, c.params["intercept"] + db) + 1e-9


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_one_underflowed_score_does_not_decide_the_fit(method):
    """An over-confident head's sigmoid underflows: one malignant validation image scored exactly
    0.0 (logit -708 after clipping to the smallest float, where an exact 1.0 gives only +36.7).
    That one image drove temperature to its bound (every score near 0.5: ECE and Brier worse) and
    Platt to a negative slope (the ranking reversed). The fit must still lower ECE and Brier and
    keep the order of the scores."""
    y, p = overconfident_scores(300, seed=5)
    p = p.copy()
    p[np.flatnonzero(y == 1)[0]] = 0.0
    calibrator = fit_calibrator(method, y, p)
    q = calibrator.apply(p)
    change = calibration_change(y, p, q)
    assert change["ece_after"] < 0.5 * change["ece_before"], change
    assert change["brier_after"] < change["brier_before"], change
    assert threshold_free(y, q)["auroc"] == pytest.approx(threshold_free(y, p)["auroc"], abs=1e-12)
    assert np.all(np.diff(q[np.argsort(p, kind="stable")]) >= 0)


def test_one_class_validation_and_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="benign and malignant"):
        fit_calibrator("platt", np.zeros(10, int), np.linspace(0.1, 0.9, 10))
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator("beta", np.array([0, 1]), np.array([0.2, 0.8]))
    with pytest.raises(ValueError, match="lacks"):
        Calibrator.from_record({"method": "temperature", "params": {}})
    assert fit_calibrator("none", np.array([0, 1]), np.array([0.2, 0.8])).apply([0.3]).tolist() == [0.3]


def test_reliability_table_uses_the_ece_bins():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    rows = reliability_table(y, p, bins=10)
    assert [(r["bin"], r["n"]) for r in rows] == [(0, 1), (1, 2), (9, 2)]
    assert rows[1]["observed"] == pytest.approx(0.5) and rows[2]["mean_p"] == pytest.approx(0.975)


# ---------------------------------------------------------------------------- a calibrated cell
@pytest.fixture(scope="module")
def small_synth(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synth", n=160, size=48, seed=5, progress=False)


def test_an_overconfident_probe_head_is_calibrated_on_validation(small_synth, tmp_path):
    """A logistic regression with (practically) no regularisation on raw handcrafted features is
    far too sure of itself; temperature scaling fitted on validation lowers its validation ECE,
    the record keeps before/after per split, and the predictions keep the raw score."""
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics, read_predictions

    settings = {"head": "logreg", "grid": {"C": [1e6]}, "class_weight": "none", "image_size": 48}
    results = {}
    for calibration in ("none", "temperature"):
        spec = CellSpec("cal", "probe", model="handcrafted", dataset=str(small_synth), seed=0, n_boot=20,
                        settings={**settings, "calibration": calibration}, threshold_policy="youden", quiet=True)
        result = execute_cell(spec, tmp_path / "runs")
        assert result.status == "done", result.error
        results[calibration] = result.path
    assert results["temperature"].parent.parent.name == "handcrafted+logreg+cal-temperature"
    assert read_metrics(results["none"])["calibration"] is None

    metrics = read_metrics(results["temperature"])
    record = metrics["calibration"]
    assert record["method"] == "temperature" and record["fitted_on"] == "validation"
    assert record["params"]["temperature"] > 1.5  # it was over-confident: the fit cools it down
    val = record["splits"]["validation"]
    assert val["ece_after"] < val["ece_before"], val
    assert val["brier_after"] < val["brier_before"], val
    assert set(record["splits"]) == {"validation", "test"}
    # the record's metrics are those of the calibrated scores; the raw score is kept beside them
    pred = read_predictions(results["temperature"], "validation")
    assert {"p_malignant", "p_uncalibrated"} <= set(pred.columns)
    raw = read_predictions(results["none"], "validation").set_index("img_id")["p_malignant"]
    assert np.allclose(pred.set_index("img_id")["p_uncalibrated"], raw.loc[pred["img_id"]].to_numpy())
    assert metrics["splits"]["validation"]["metrics"]["ece"]["value"] == pytest.approx(val["ece_after"], abs=1e-9)
    # temperature scaling does not reorder images: the same AUROC as the uncalibrated cell
    auc = {k: read_metrics(v)["splits"]["test"]["metrics"]["auroc"]["value"] for k, v in results.items()}
    assert auc["temperature"] == pytest.approx(auc["none"], abs=1e-12)
