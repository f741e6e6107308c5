"""Weighted, batched computation of every metric from one sort of the scores.

A bootstrap replicate is the original data with a whole-number weight per image (how many times
it was drawn), so one replicate, a thousand replicates and the point estimate (all weights 1) go
through the same code: a (B, n) weight matrix in descending-score order. Ties are handled by
summing weights within runs of equal scores, exactly like scikit-learn's ``roc_curve``; an
undefined value (e.g. AUROC of a replicate with no malignant image) is NaN here and is turned
into ``None`` plus a reason by the public functions.
"""

from __future__ import annotations

import numpy as np

# Floating tolerance when comparing an FPR/TPR (a ratio of counts) with a target like 1 - 0.9:
# 1/10 must count as "FPR <= 0.1" although 1 - 0.9 == 0.09999999999999998 in binary floating point.
RATE_TOLERANCE = 1e-12

_ERRSTATE = {"divide": "ignore", "invalid": "ignore"}


class ScoreTable:
    """Labels and p_malignant sorted once by descending score (ties kept together)."""

    def __init__(self, y: np.ndarray, p: np.ndarray):
        order = np.argsort(-p, kind="mergesort")
        self.order = order
        self.p = p[order]
        self.y = y[order].astype(np.float64)
        self.n = int(p.shape[0])
        # First index of every run of equal scores: one ROC point per distinct threshold.
        is_new = np.ones(self.n, dtype=bool)
        is_new[1:] = self.p[1:] != self.p[:-1]
        self.run_starts = np.flatnonzero(is_new)

    def unit_weights(self) -> np.ndarray:
        return np.ones((1, self.n), dtype=np.float64)


def roc_counts(table: ScoreTable, weights: np.ndarray):
    """Per distinct score: weighted positives/negatives at that score and cumulative TP/FP counts."""
    pos = weights * table.y
    neg = weights - pos
    pos_at = np.add.reduceat(pos, table.run_starts, axis=1)
    neg_at = np.add.reduceat(neg, table.run_starts, axis=1)
    tps = np.cumsum(pos_at, axis=1)
    fps = np.cumsum(neg_at, axis=1)
    return pos_at, neg_at, tps, fps


def ranking_metrics(
    table: ScoreTable,
    weights: np.ndarray,
    *,
    pauc_min_tpr: float,
    specificities: tuple[float, ...],
    spec_names: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """AUROC, AUPRC, pAUC and sensitivity at fixed specificities for each row of ``weights``."""
    pos_at, neg_at, tps, fps = roc_counts(table, weights)
    n_pos = tps[:, -1]
    n_neg = fps[:, -1]
    defined = (n_pos > 0) & (n_neg > 0)
    out: dict[str, np.ndarray] = {}
    with np.errstate(**_ERRSTATE):
        # Trapezoidal area = P(score_malignant > score_benign) + 0.5 P(tie): each benign weight at a
        # score sees the malignant weight strictly above it plus half of that at the same score.
        out["auroc"] = (neg_at * (tps - 0.5 * pos_at)).sum(axis=1) / (n_pos * n_neg)

        # Average precision as scikit-learn defines it: sum over thresholds of
        # (recall_k - recall_{k-1}) * precision_k, with no interpolation.
        predicted = tps + fps
        precision = np.where(predicted > 0, tps / np.where(predicted > 0, predicted, 1.0), 0.0)
        out["auprc"] = (pos_at * precision).sum(axis=1) / n_pos

        zeros = np.zeros((weights.shape[0], 1))
        tpr = np.concatenate([zeros, tps / n_pos[:, None]], axis=1)
        fpr = np.concatenate([zeros, fps / n_neg[:, None]], axis=1)
        out["pauc"] = _partial_auc_above_tpr(fpr, tpr, pauc_min_tpr)
        for spec, name in zip(specificities, spec_names):
            allowed = fpr <= (1.0 - spec) + RATE_TOLERANCE
            out[name] = np.where(allowed, tpr, -np.inf).max(axis=1)
    for name in out:
        out[name] = np.where(defined, out[name], np.nan)
    return out


def _partial_auc_above_tpr(fpr: np.ndarray, tpr: np.ndarray, min_tpr: float) -> np.ndarray:
    """Area of the ROC region with TPR >= min_tpr (ISIC 2024 pAUC), i.e. the integral of
    max(TPR(FPR) - min_tpr, 0) over FPR in [0, 1] on the piecewise-linear ROC curve.

    Each ROC segment (x0, y0) -> (x1, y1) contributes a trapezoid when it lies above the floor,
    and the triangle above the floor when it crosses it (linear interpolation, as in the ISIC
    2024 Kaggle metric).
    """
    x0, x1 = fpr[:, :-1], fpr[:, 1:]
    y0, y1 = tpr[:, :-1], tpr[:, 1:]
    dx = x1 - x0
    above = y0 >= min_tpr
    crossing = (y0 < min_tpr) & (y1 > min_tpr)
    with np.errstate(**_ERRSTATE):
        trapezoid = dx * (0.5 * (y0 + y1) - min_tpr)
        triangle = dx * (y1 - min_tpr) ** 2 / (2.0 * (y1 - y0))
    area = np.where(above, trapezoid, np.where(crossing, triangle, 0.0))
    return area.sum(axis=1)


def calibration_metrics(table: ScoreTable, weights: np.ndarray, *, ece_bins: int) -> dict[str, np.ndarray]:
    """Brier score and expected calibration error (equal-width bins on p_malignant)."""
    total = weights.sum(axis=1)
    squared_error = (table.p - table.y) ** 2
    # Bin k holds floor(p * B) == k, i.e. [k/B, (k+1)/B); p = 1.0 goes to the last bin. (Computed
    # by multiplication, not by comparing with np.linspace edges, whose 0.30000000000000004 would
    # put p = 0.3 in the bin below.)
    bins = np.minimum(np.floor(table.p * ece_bins).astype(np.int64), ece_bins - 1)
    one_hot = np.zeros((table.n, ece_bins))
    one_hot[np.arange(table.n), bins] = 1.0
    with np.errstate(**_ERRSTATE):
        brier = (weights @ squared_error) / total
        observed = weights @ (one_hot * table.y[:, None])
        expected = weights @ (one_hot * table.p[:, None])
        # sum_b (n_b / n) |mean_y_b - mean_p_b| == sum_b |sum_y_b - sum_p_b| / n
        ece = np.abs(observed - expected).sum(axis=1) / total
    return {"brier": brier, "ece": ece}


def confusion_counts(table: ScoreTable, weights: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Weighted tn, fp, fn, tp with pred = p_malignant >= threshold."""
    pred = (table.p >= threshold).astype(np.float64)
    y = table.y
    return {
        "tn": weights @ ((1.0 - y) * (1.0 - pred)),
        "fp": weights @ ((1.0 - y) * pred),
        "fn": weights @ (y * (1.0 - pred)),
        "tp": weights @ (y * pred),
    }


def operating_metrics(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro-F1, sensitivity, specificity, PPV, NPV from counts.

    NaN where the metric is undefined: sensitivity without malignant images, specificity without
    benign ones, balanced accuracy and macro-F1 without both classes, PPV when nothing is predicted
    malignant, NPV when nothing is predicted benign.
    """
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    n_pos = tp + fn
    n_neg = tn + fp
    both = (n_pos > 0) & (n_neg > 0)
    with np.errstate(**_ERRSTATE):
        sensitivity = np.where(n_pos > 0, tp / n_pos, np.nan)
        specificity = np.where(n_neg > 0, tn / n_neg, np.nan)
        f1_malignant = 2 * tp / (2 * tp + fp + fn)
        f1_benign = 2 * tn / (2 * tn + fn + fp)
        return {
            "accuracy": (tp + tn) / (n_pos + n_neg),
            "balanced_accuracy": np.where(both, 0.5 * (sensitivity + specificity), np.nan),
            "macro_f1": np.where(both, 0.5 * (f1_malignant + f1_benign), np.nan),
            "sensitivity": sensitivity,
            "specificity": specificity,
            "ppv": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "npv": np.where(tn + fn > 0, tn / (tn + fn), np.nan),
        }


def all_metrics(
    table: ScoreTable,
    weights: np.ndarray,
    *,
    threshold: float | None,
    pauc_min_tpr: float,
    specificities: tuple[float, ...],
    spec_names: tuple[str, ...],
    ece_bins: int,
) -> dict[str, np.ndarray]:
    """Every metric for each row of ``weights`` (threshold metrics only when a threshold is given)."""
    out = ranking_metrics(
        table, weights, pauc_min_tpr=pauc_min_tpr, specificities=specificities, spec_names=spec_names
    )
    out.update(calibration_metrics(table, weights, ece_bins=ece_bins))
    if threshold is not None:
        counts = confusion_counts(table, weights, threshold)
        out.update(operating_metrics(counts))
    return out
