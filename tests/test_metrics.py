"""dermbench.metrics: threshold-free and operating-point metrics, thresholds, degenerate inputs.

Values are anchored on scikit-learn and on the official ISIC challenge scorer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from dermbench import metrics as M
from dermbench.metrics import ThresholdPolicyError

TOL = 1e-9


def _random_case(seed: int, n: int = 400, *, decimals: int | None = None, prevalence: float = 0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]  # both classes always present
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    if decimals is not None:  # coarse scores -> many ties
        p = np.round(p, decimals)
    return y, p


CASES = [
    _random_case(0),
    _random_case(1, decimals=1),
    _random_case(2, n=57, decimals=2, prevalence=0.1),
    _random_case(3, n=1000, decimals=3, prevalence=0.05),
    _random_case(4, n=25, decimals=0),  # scores in {0, 1} only
]


# --- names -----------------------------------------------------------------------------------

def test_metric_names_and_direction():
    assert M.METRIC_NAMES[:8] == ("auroc", "auprc", "pauc", "sens_at_spec80", "sens_at_spec90",
                                  "sens_at_spec95", "brier", "ece")
    assert set(M.HIGHER_IS_BETTER) == set(M.METRIC_NAMES)
    assert M.HIGHER_IS_BETTER["brier"] is False and M.HIGHER_IS_BETTER["ece"] is False
    assert M.HIGHER_IS_BETTER["auroc"] is True and M.HIGHER_IS_BETTER["npv"] is True
    assert M.sens_at_spec_name(0.975) == "sens_at_spec97.5"


# --- agreement with scikit-learn ---------------------------------------------------------------

@pytest.mark.parametrize("case", range(len(CASES)))
def test_threshold_free_matches_sklearn(case):
    y, p = CASES[case]
    values = M.threshold_free(y, p)
    assert list(values) == ["auroc", "auprc", "pauc", "sens_at_spec80", "sens_at_spec90",
                            "sens_at_spec95", "brier", "ece"]
    assert values["auroc"] == pytest.approx(skm.roc_auc_score(y, p), abs=TOL)
    assert values["auprc"] == pytest.approx(skm.average_precision_score(y, p), abs=TOL)
    assert values["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=TOL)
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    for spec in (0.8, 0.9, 0.95):
        expected = tpr[fpr <= 1 - spec + 1e-12].max()
        assert values[M.sens_at_spec_name(spec)] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.65])
def test_at_threshold_matches_sklearn(case, threshold):
    y, p = CASES[case]
    pred = (p >= threshold).astype(int)
    values = M.at_threshold(y, p, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (values["tn"], values["fp"], values["fn"], values["tp"]) == (tn, fp, fn, tp)
    assert all(isinstance(values[k], int) for k in ("tn", "fp", "fn", "tp"))
    assert values["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert values["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=TOL)
    assert values["macro_f1"] == pytest.approx(
        skm.f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0.0), abs=TOL)
    assert values["sensitivity"] == pytest.approx(skm.recall_score(y, pred), abs=TOL)
    assert values["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=TOL)
    if tp + fp:
        assert values["ppv"] == pytest.approx(skm.precision_score(y, pred), abs=TOL)
    else:
        assert values["ppv"] is None
    if tn + fn:
        assert values["npv"] == pytest.approx(skm.precision_score(y, pred, pos_label=0), abs=TOL)
    else:
        assert values["npv"] is None


# --- pAUC and the official ISIC scorer ---------------------------------------------------------

def _isic_pauc_kaggle_style(y, p, min_tpr=0.8):
    """Reference: the ISIC 2024 definition via the flipped ROC curve (labels and scores negated),
    partial area for flipped FPR in [0, 1 - min_tpr] with linear interpolation at the edge."""
    fpr, tpr, _ = skm.roc_curve(1 - np.asarray(y), -np.asarray(p))
    max_fpr = 1 - min_tpr
    stop = np.searchsorted(fpr, max_fpr, "right")
    edge_tpr = np.interp(max_fpr, fpr[stop - 1: stop + 1], tpr[stop - 1: stop + 1])
    return skm.auc(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], edge_tpr))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pauc_matches_flipped_curve_definition(case):
    y, p = CASES[case]
    assert M.threshold_free(y, p)["pauc"] == pytest.approx(_isic_pauc_kaggle_style(y, p), abs=TOL)
    assert M.threshold_free(y, p, pauc_min_tpr=0.6)["pauc"] == pytest.approx(
        _isic_pauc_kaggle_style(y, p, 0.6), abs=TOL)


def _isic_2024_kaggle_score(y, p, min_tpr=0.8):
    """The ISIC 2024 Kaggle metric as published (scikit-learn's McClish-standardised partial AUC
    on the flipped problem, then un-standardised), copied formula for formula."""
    v_gt = abs(np.asarray(y) - 1)
    v_pred = 1.0 - np.asarray(p)
    max_fpr = abs(1 - min_tpr)
    partial_auc_scaled = skm.roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
    return 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (partial_auc_scaled - 0.5)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pauc_equals_isic_2024_kaggle_metric(case):
    y, p = CASES[case]
    for floor in (0.8, 0.6, 0.9):
        assert M.threshold_free(y, p, pauc_min_tpr=floor)["pauc"] == pytest.approx(
            _isic_2024_kaggle_score(y, p, floor), abs=TOL)


def test_pauc_bounds():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert M.threshold_free(y, np.array([.1, .2, .3, .7, .8, .9]))["pauc"] == pytest.approx(0.2)
    assert M.threshold_free(y, np.array([.9, .8, .7, .3, .2, .1]))["pauc"] == pytest.approx(0.0)
    # constant scores: the diagonal, area above TPR 0.8 is the triangle 0.2 * 0.2 / 2
    assert M.threshold_free(y, np.full(6, 0.4))["pauc"] == pytest.approx(0.02)


# The scorer triggers deprecation warnings inside rdp and pandas 3; they are not ours to fix.
quiet_isic = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def isic():
    try:
        from isic_challenge_scoring import metrics as isic_metrics
        from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore
    except ImportError as error:  # pragma: no cover - installed in the dev environment
        pytest.skip(f"isic-challenge-scoring is not importable ({error}); pip install isic-challenge-scoring")
    return isic_metrics, ClassificationScore, ClassificationMetric


def _isic_category_scores(isic, y, p):
    import pandas as pd

    _, ClassificationScore, ClassificationMetric = isic
    truth = pd.DataFrame({"benign": 1.0 - y, "malignant": y.astype(float)})
    pred = pd.DataFrame({"benign": 1.0 - p, "malignant": p})
    weights = pd.DataFrame({"score_weight": np.ones(len(y)), "validation_weight": np.ones(len(y))})
    score = ClassificationScore(truth, pred, weights, ClassificationMetric.AUC)
    return score.per_category.loc["malignant"], score.aggregate


def _fpr_where_tpr_reaches(y, p, min_tpr):
    curve = M.roc_points(y, p)
    fpr, tpr = curve["fpr"], curve["tpr"]
    i = int(np.searchsorted(tpr, min_tpr, side="left"))
    return float(np.interp(min_tpr, tpr[i - 1: i + 1], fpr[i - 1: i + 1]))


@pytest.mark.parametrize("case", range(len(CASES)))
@quiet_isic
def test_agrees_with_official_isic_scorer(isic, case):
    y, p = CASES[case]
    p = np.where(p == 0.5, 0.51, p)  # ISIC calls p > 0.5 malignant, we p >= threshold
    row, aggregate = _isic_category_scores(isic, y, p)
    ours = M.threshold_free(y, p)
    assert ours["auroc"] == pytest.approx(row["auc"], abs=TOL)
    assert ours["auprc"] == pytest.approx(row["ap"], abs=TOL)
    # ISIC's auc_sens_80 integrates the ROC curve right of TPR 0.8 down to TPR 0; the ISIC 2024
    # pAUC is that minus the rectangle below TPR 0.8.
    fpr_at_80 = _fpr_where_tpr_reaches(y, p, 0.8)
    assert ours["pauc"] == pytest.approx(row["auc_sens_80"] - 0.8 * (1 - fpr_at_80), abs=TOL)
    op = M.at_threshold(y, p, 0.5)
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        assert op[name] == pytest.approx(row[name], abs=TOL), name
    assert op["balanced_accuracy"] == pytest.approx(aggregate["balanced_accuracy"], abs=TOL)


def test_isic_auc_above_sensitivity_relation_other_floor(isic):
    import pandas as pd

    isic_metrics = isic[0]
    y, p = CASES[0]
    for floor in (0.7, 0.9):
        above = isic_metrics.auc_above_sensitivity(pd.Series(y.astype(float)), pd.Series(p),
                                                   pd.Series(np.ones(len(y))), floor)
        expected = above - floor * (1 - _fpr_where_tpr_reaches(y, p, floor))
        assert M.threshold_free(y, p, pauc_min_tpr=floor)["pauc"] == pytest.approx(expected, abs=TOL)


# --- hand-checkable fixtures -----------------------------------------------------------------

Y_TINY = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
P_TINY = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.5, 0.5, 0.9])


def test_at_threshold_tiny_by_hand():
    # pred at 0.5: [0,0,0,1,0,1,1,1,1,1] -> tp 4 (0.7,0.8,0.5,0.9), fn 1 (0.4), fp 2 (0.6,0.5), tn 3
    values = M.at_threshold(Y_TINY, P_TINY, 0.5)
    assert (values["tn"], values["fp"], values["fn"], values["tp"]) == (3, 2, 1, 4)
    assert values["accuracy"] == pytest.approx(0.7)
    assert values["sensitivity"] == pytest.approx(0.8)
    assert values["specificity"] == pytest.approx(0.6)
    assert values["balanced_accuracy"] == pytest.approx(0.7)
    assert values["ppv"] == pytest.approx(4 / 6)
    assert values["npv"] == pytest.approx(3 / 4)
    assert values["macro_f1"] == pytest.approx((8 / 11 + 6 / 9) / 2)
    assert M.predict(P_TINY, 0.5).tolist() == [0, 0, 0, 1, 0, 1, 1, 1, 1, 1]
    assert M.predict([0.5], 0.5).dtype.kind == "i"


def test_threshold_free_tiny_by_hand():
    # 5 malignant x 5 benign = 25 pairs; benign 0.6 beats malignant 0.4 and 0.5 (2 pairs), the
    # 0.5/0.5 tie counts half, benign 0.5 beats malignant 0.4 (1): AUROC = (25 - 3.5) / 25.
    values = M.threshold_free(Y_TINY, P_TINY)
    assert values["auroc"] == pytest.approx(21.5 / 25)
    # ROC points (fpr, tpr) by descending score: (0,.2) (0,.4) (0,.6) (.2,.6) (.4,.8) (.4,1) (.6,1)
    # (.8,1) (1,1); specificity 80% allows FPR <= .2 -> best TPR .6; 95% allows FPR 0 -> .6.
    assert values["sens_at_spec80"] == pytest.approx(0.6)
    assert values["sens_at_spec95"] == pytest.approx(0.6)
    # ECE with 10 bins, one image per bin except [0.5, 0.6) holding the two 0.5s (one malignant):
    # |y - p| summed: .1 .2 .3 .6 .6 .3 .2 .1 plus |1 - 1.0| for the 0.5 pair -> 2.4 / 10
    assert values["ece"] == pytest.approx(2.4 / 10)


def test_ece_bins_by_hand():
    # p = 0.3 opens the bin [0.3, 0.4); 0.25 is in [0.2, 0.3): two bins of one image each
    assert M.threshold_free([1, 0], [0.3, 0.25])["ece"] == pytest.approx((0.7 + 0.25) / 2)
    # with 2 bins both land in [0, 0.5): |mean y - mean p| = |0.5 - 0.275|
    assert M.threshold_free([1, 0], [0.3, 0.25], ece_bins=2)["ece"] == pytest.approx(0.225)
    assert M.threshold_free([1, 0], [1.0, 0.0])["ece"] == 0.0  # p = 1 falls in the last bin
    perfectly_calibrated = M.threshold_free([1, 0, 0, 0, 1, 1, 1, 0], [0.25] * 4 + [0.75] * 4)
    assert perfectly_calibrated["ece"] == pytest.approx(0.0)


def test_pauc_with_zero_floor_is_auroc():
    y, p = CASES[1]
    values = M.threshold_free(y, p, pauc_min_tpr=0.0)
    assert values["pauc"] == pytest.approx(values["auroc"], abs=TOL)
    with pytest.raises(ValueError, match="pauc_min_tpr"):
        M.threshold_free(y, p, pauc_min_tpr=1.0)


def test_sens_at_spec_counts_exact_boundary():
    # 10 benign: FPR 1/10 must count as specificity 90% although 1 - 0.9 < 0.1 in floating point.
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([0.9] + [0.1] * 9 + [0.8, 0.8, 0.95, 0.05])
    values = M.threshold_free(y, p)
    assert values["sens_at_spec90"] == pytest.approx(0.75)
    assert values["sens_at_spec95"] == pytest.approx(0.25)


# --- thresholds ------------------------------------------------------------------------------

def test_parse_threshold_policy():
    assert M.parse_threshold_policy("fixed:0.5") == M.ThresholdPolicy("fixed", 0.5)
    assert M.parse_threshold_policy(" Youden ") == M.ThresholdPolicy("youden")
    assert str(M.parse_threshold_policy("sensitivity:0.9")) == "sensitivity:0.9"
    for bad in ("", "youden:1", "fixed", "fixed:abc", "fixed:50", "sensitivity:0", "precision:0.9", 0.5):
        with pytest.raises(ThresholdPolicyError, match="allowed forms|must be in"):
            M.parse_threshold_policy(bad)
    with pytest.raises(ValueError, match="fixed:<t>"):
        M.parse_threshold_policy("best")


def test_choose_threshold_by_hand():
    assert M.choose_threshold("fixed:0.3") == 0.3
    # Youden J = TPR - FPR at thresholds .9 .8 .7 .6 .5 .4 ...: .2 .4 .6 .4 .4 .6 ...; the maximum
    # .6 is reached at 0.7 and at 0.4, and ties go to the highest threshold.
    assert M.choose_threshold("youden", Y_TINY, P_TINY) == pytest.approx(0.7)
    assert M.choose_threshold("sensitivity:0.8", Y_TINY, P_TINY) == pytest.approx(0.5)
    assert M.choose_threshold("sensitivity:0.6", Y_TINY, P_TINY) == pytest.approx(0.7)
    assert M.choose_threshold("sensitivity:1.0", Y_TINY, P_TINY) == pytest.approx(0.4)
    assert M.choose_threshold("specificity:0.8", Y_TINY, P_TINY) == pytest.approx(0.6)
    assert M.choose_threshold("specificity:1.0", Y_TINY, P_TINY) == pytest.approx(0.7)
    # the most malignant-looking image is benign: only "all benign" meets 100% specificity
    high = M.choose_threshold("specificity:1.0", [1, 0], [0.2, 0.9])
    assert high > 0.9 and M.predict([0.2, 0.9], high).tolist() == [0, 0]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_choose_threshold_properties(case):
    y, p = CASES[case]
    t = M.choose_threshold("sensitivity:0.9", y, p)
    assert M.at_threshold(y, p, t)["sensitivity"] >= 0.9
    higher = p[p > t]
    if higher.size:  # the next higher observed score misses the target
        assert M.at_threshold(y, p, higher.min())["sensitivity"] < 0.9
    t = M.choose_threshold("specificity:0.9", y, p)
    assert M.at_threshold(y, p, t)["specificity"] >= 0.9
    t = M.choose_threshold("youden", y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    best = M.at_threshold(y, p, t)
    assert best["sensitivity"] + best["specificity"] - 1 == pytest.approx((tpr - fpr).max(), abs=TOL)


def test_choose_threshold_degenerate_validation():
    with pytest.raises(ThresholdPolicyError, match="no malignant.*fixed:0.5"):
        M.choose_threshold("youden", [0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ThresholdPolicyError, match="no benign"):
        M.choose_threshold("specificity:0.9", [1, 1], [0.1, 0.2])
    with pytest.raises(ThresholdPolicyError, match="no malignant"):
        M.choose_threshold("sensitivity:0.9", [0, 0], [0.1, 0.2])
    # what each policy needs is enough: sensitivity needs only malignant images
    assert M.choose_threshold("sensitivity:0.5", [1, 1], [0.1, 0.2]) == pytest.approx(0.2)
    with pytest.raises(ThresholdPolicyError, match="needs validation"):
        M.choose_threshold("youden")


# --- degenerate and invalid inputs -----------------------------------------------------------

def test_one_class_gives_none_with_reasons():
    y = np.zeros(5, dtype=int)
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    free = M.threshold_free(y, p)
    assert free["auroc"] is None and free["pauc"] is None and free["sens_at_spec90"] is None
    assert free["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    op = M.at_threshold(y, p, 0.5)
    assert op["sensitivity"] is None and op["balanced_accuracy"] is None and op["macro_f1"] is None
    assert op["specificity"] == pytest.approx(0.6)
    assert op["ppv"] == 0.0 and op["npv"] == 1.0
    record = M.evaluate(y, p, threshold=0.5, n_boot=50)
    assert "only benign" in record["undefined"]["auroc"]
    assert "sensitivity" in record["undefined"] and "specificity" not in record["undefined"]
    assert record["metrics"]["auroc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert record["bootstrap"]["valid"]["auroc"] == 0
    json.dumps(record, allow_nan=False)


def test_no_predicted_positive_ppv_none():
    values, reasons = M.operating_point.at_threshold_with_reasons([0, 1, 1], [0.1, 0.2, 0.3], 0.9)
    assert values["ppv"] is None and "no image predicted malignant" in reasons["ppv"]
    assert values["sensitivity"] == 0.0


def test_constant_scores_are_defined():
    y = np.array([0, 1, 0, 1, 1])
    values = M.threshold_free(y, np.full(5, 0.3))
    assert values["auroc"] == pytest.approx(0.5)
    assert values["sens_at_spec80"] == 0.0
    assert values["auprc"] == pytest.approx(skm.average_precision_score(y, np.full(5, 0.3)))


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 1], [0.1, np.nan, np.nan], "2 NaN"),
        ([0, 1], [0.1, 0.2, 0.3], "differ in length"),
        ([], [], "empty"),
        ([0, 2], [0.1, 0.2], "only 0"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        (["benign", "malignant"], [0.1, 0.2], "0/1"),
        ([0, np.nan], [0.1, 0.2], "missing"),
    ],
)
def test_invalid_inputs_raise_clear_errors(y, p, message):
    for call in (lambda: M.threshold_free(y, p), lambda: M.at_threshold(y, p, 0.5),
                 lambda: M.evaluate(y, p, threshold=0.5, n_boot=10)):
        with pytest.raises(ValueError, match=message):
            call()


def test_boolean_labels_accepted():
    y = np.array([False, True, True, False])
    assert M.threshold_free(y, [0.1, 0.9, 0.8, 0.2])["auroc"] == 1.0


def test_a_metric_added_to_the_engine_and_names_reaches_every_path(monkeypatch):
    """docs/ARCHITECTURE.md: a metric is its computation in ``_engine.py`` + its name in ``names.py``.
    Simulated here with a threshold-free 'mean_score': the point value, the bootstrap with
    ``n_boot`` 0 (allowed in configs) and the paired comparison all pick it up (a second list of
    names in ranking/bootstrap made the last two a KeyError)."""
    from dermbench.metrics import _engine, bootstrap, compare

    real = _engine.calibration_metrics

    def with_mean_score(table, weights, *, ece_bins):
        out = real(table, weights, ece_bins=ece_bins)
        out["mean_score"] = (weights @ table.p) / weights.sum(axis=1)
        return out

    monkeypatch.setattr(_engine, "calibration_metrics", with_mean_score)
    names = (*M.METRIC_NAMES, "mean_score")
    monkeypatch.setattr(bootstrap, "METRIC_NAMES", names)
    monkeypatch.setattr(compare, "METRIC_NAMES", names)
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.7, 0.9, 0.4, 0.6, 0.3, 0.8])
    assert M.threshold_free(y, p)["mean_score"] == pytest.approx(p.mean())
    assert bootstrap.evaluate(y, p, threshold=0.5, n_boot=0)["metrics"]["mean_score"]["value"] == pytest.approx(p.mean())
    assert bootstrap.evaluate(y, p, threshold=0.5, n_boot=20)["metrics"]["mean_score"]["ci_low"] is not None
    result = compare.paired_bootstrap(y, p, p / 2, metric="mean_score", n_boot=20)
    assert result["diff"] == pytest.approx(p.mean() / 2)
