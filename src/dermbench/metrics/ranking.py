"""Threshold-free metrics: AUROC, AUPRC, ISIC 2024 pAUC, sensitivity at fixed specificity,
Brier score and ECE."""

from __future__ import annotations

import numpy as np

from . import _engine
from ._inputs import as_labels_scores
from ._undefined import reasons_for, to_optional_float
from .names import DEFAULT_ECE_BINS, DEFAULT_PAUC_MIN_TPR, DEFAULT_SPECIFICITIES, sens_at_spec_name


def check_threshold_free_options(pauc_min_tpr, specificities, ece_bins) -> tuple:
    """Validate the options shared by threshold_free/bootstrap/evaluate; return normalised values."""
    min_tpr = float(pauc_min_tpr)
    if not 0.0 <= min_tpr < 1.0:
        raise ValueError(f"pauc_min_tpr must be in [0, 1), got {pauc_min_tpr!r} (ISIC 2024 uses 0.8)")
    specs = tuple(float(s) for s in specificities)
    for s in specs:
        if not 0.0 < s <= 1.0:
            raise ValueError(f"specificities must be in (0, 1], got {s!r}")
    names = tuple(sens_at_spec_name(s) for s in specs)
    if len(set(names)) != len(names):
        raise ValueError(f"specificities must be distinct, got {specificities!r}")
    if int(ece_bins) != ece_bins or ece_bins < 1:
        raise ValueError(f"ece_bins must be a positive integer, got {ece_bins!r}")
    return min_tpr, specs, names, int(ece_bins)


def threshold_free(
    y,
    p,
    *,
    pauc_min_tpr: float = DEFAULT_PAUC_MIN_TPR,
    specificities=DEFAULT_SPECIFICITIES,
    ece_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, float | None]:
    """Metrics that need no operating threshold, from labels ``y`` (1 = malignant) and ``p`` (p_malignant).

    Keys: ``auroc, auprc, pauc, sens_at_spec80, sens_at_spec90, sens_at_spec95, brier, ece``
    (one ``sens_at_spec<100*s>`` per entry of ``specificities``).

    Definitions (ties in ``p`` handled as scikit-learn does: one ROC point per distinct score,
    joined by straight lines):

    - ``auroc``: trapezoidal area under the ROC curve (== ``sklearn.metrics.roc_auc_score``).
    - ``auprc``: average precision, sum of (R_k - R_{k-1}) P_k without interpolation
      (== ``sklearn.metrics.average_precision_score``).
    - ``pauc``: ISIC 2024 partial AUC above the TPR floor ``pauc_min_tpr``: the area of the ROC
      region where TPR >= floor, i.e. the integral of max(TPR - floor, 0) dFPR, with the curve
      linearly interpolated where it crosses the floor. Range [0, 1 - floor] ([0, 0.2] at 0.8).
      It equals the official ISIC scorer's ``auc_sens_80`` minus floor * (1 - FPR at TPR = floor).
    - ``sens_at_spec<s>``: the largest TPR among the ROC points (achievable thresholds) whose FPR
      is <= 1 - s (with a 1e-12 tolerance for floating point). No interpolation between points: it
      is a sensitivity some threshold actually attains at that specificity or better.
    - ``brier``: mean of (p - y)^2 (== ``sklearn.metrics.brier_score_loss``).
    - ``ece``: expected calibration error of p_malignant (not of the max-class confidence):
      ``ece_bins`` equal-width bins [k/B, (k+1)/B) (p = 1 in the last), sum over bins of
      (n_bin / n) * |mean(y) - mean(p)| in the bin.

    The ranking metrics (auroc, auprc, pauc, sens_at_spec*) are ``None`` when only one class is
    present; brier and ece are always defined. Invalid input (NaN in ``p``, values outside [0, 1],
    labels other than 0/1, length mismatch, no rows) raises ValueError.
    """
    values, _ = threshold_free_with_reasons(
        y, p, pauc_min_tpr=pauc_min_tpr, specificities=specificities, ece_bins=ece_bins
    )
    return values


def threshold_free_with_reasons(y, p, *, pauc_min_tpr=DEFAULT_PAUC_MIN_TPR,
                                specificities=DEFAULT_SPECIFICITIES, ece_bins=DEFAULT_ECE_BINS):
    """:func:`threshold_free` plus ``{name: reason}`` for the metrics that are None."""
    labels, scores = as_labels_scores(y, p)
    min_tpr, specs, names, bins = check_threshold_free_options(pauc_min_tpr, specificities, ece_bins)
    table = _engine.ScoreTable(labels, scores)
    weights = table.unit_weights()
    raw = _engine.ranking_metrics(table, weights, pauc_min_tpr=min_tpr, specificities=specs, spec_names=names)
    raw.update(_engine.calibration_metrics(table, weights, ece_bins=bins))
    order = tuple(raw)  # every threshold-free metric the engine computes, in its order
    values = {name: to_optional_float(raw[name][0]) for name in order}
    n_pos = int(labels.sum())
    reasons = reasons_for(order, values, n_pos=n_pos, n_neg=int(labels.size - n_pos))
    return values, reasons


def roc_points(y, p) -> dict[str, np.ndarray]:
    """The full ROC curve (one point per distinct score, starting at (0, 0)) for plots.

    Returns ``{"fpr", "tpr", "threshold"}``; ``threshold[k]`` is the p_malignant cut
    (pred = p >= threshold) giving point k, ``inf`` for the (0, 0) start. Needs both classes.
    """
    labels, scores = as_labels_scores(y, p)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise ValueError("a ROC curve needs both benign and malignant images")
    table = _engine.ScoreTable(labels, scores)
    _, _, tps, fps = _engine.roc_counts(table, table.unit_weights())
    return {
        "fpr": np.concatenate([[0.0], fps[0] / fps[0, -1]]),
        "tpr": np.concatenate([[0.0], tps[0] / tps[0, -1]]),
        "threshold": np.concatenate([[np.inf], table.p[table.run_starts]]),
    }
