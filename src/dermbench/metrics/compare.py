"""Paired comparison of two models scored on the same images: DeLong for AUROC, paired
bootstrap for any metric."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from ._inputs import as_labels, as_labels_scores, as_scores, as_threshold
from .bootstrap import _check_bootstrap_options, bootstrap_replicates, percentile_interval
from .names import AT_THRESHOLD_NAMES, METRIC_NAMES
from .operating_point import at_threshold
from .ranking import threshold_free
from .small_sample import DEFAULT_RULE


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` along the last axis, ties getting the mean of their ranks. O(n log n)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    n = x.shape[0]
    is_new = np.ones(n, dtype=bool)
    is_new[1:] = sorted_x[1:] != sorted_x[:-1]
    starts = np.flatnonzero(is_new)
    ends = np.append(starts[1:], n)  # exclusive
    run_rank = 0.5 * (starts + 1 + ends)  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def _delong_components(y: np.ndarray, scores: np.ndarray):
    """AUC and DeLong structural components V10 (per malignant) and V01 (per benign).

    Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas under
    correlated receiver operating characteristic curves", IEEE Signal Processing Letters 21(11):
    with midranks T_z over all images, T_x over malignant only and T_y over benign only,
    V10_i = (T_z(x_i) - T_x(x_i)) / n and V01_j = 1 - (T_z(y_j) - T_y(y_j)) / m.
    """
    positive = scores[y == 1]
    negative = scores[y == 0]
    m, n = positive.size, negative.size
    tz = _midranks(np.concatenate([positive, negative]))
    tx = _midranks(positive)
    ty = _midranks(negative)
    auc = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return auc, v10, v01


def delong_test(y, p_a, p_b, *, alpha: float = 0.05) -> dict:
    """DeLong test of AUROC(a) - AUROC(b) for two models scored on the same images.

    Returns ``{"auc_a", "auc_b", "diff", "se", "z", "p_value", "ci_low", "ci_high", "n",
    "n_malignant", "n_benign", "clipped", "note"}`` where the interval is diff +/- z_{1-alpha/2} * se
    (normal approximation), **clipped to [-1, 1]** (a difference of two AUROCs cannot leave it;
    ``clipped`` says whether it had to be), and the p-value is two-sided. ``note`` is empty unless
    the sample is small (:mod:`.small_sample`: fewer than 100 images or 20 of a class), the interval
    was clipped or the variance is zero — when the normal approximation behind the interval and
    the p-value is poor, and the note says so.
    When the difference has zero variance (e.g. identical scores): diff == 0 gives z = 0 and
    p = 1; a non-zero diff with zero variance gives z = None and p = 0.
    Needs both classes (ValueError otherwise). O(n log n).
    """
    labels, scores_a = as_labels_scores(y, p_a)
    scores_b = as_scores(p_b, name="p_b")
    if scores_b.shape != scores_a.shape:
        raise ValueError(f"p_a and p_b differ in length ({scores_a.size} vs {scores_b.size})")
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise ValueError(
            f"DeLong test needs both classes; got {n_pos} malignant and {labels.size - n_pos} benign images"
        )
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    auc_a, v10_a, v01_a = _delong_components(labels, scores_a)
    auc_b, v10_b, v01_b = _delong_components(labels, scores_b)
    m, n = v10_a.size, v01_a.size
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1]
    diff = float(auc_a - auc_b)
    se = math.sqrt(max(float(variance), 0.0))
    if se > 1e-15:
        z = diff / se
        p_value = math.erfc(abs(z) / math.sqrt(2.0))
    elif abs(diff) < 1e-15:
        z, p_value = 0.0, 1.0
    else:
        z, p_value = None, 0.0
    quantile = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    raw_low, raw_high = diff - quantile * se, diff + quantile * se
    ci_low, ci_high = max(-1.0, raw_low), min(1.0, raw_high)
    clipped = ci_low != raw_low or ci_high != raw_high
    notes = [DEFAULT_RULE.note(int(labels.size), m, n)]
    if notes[0]:
        notes.append("the normal approximation of DeLong's test is poor here: read the interval and p-value as rough")
    if clipped:
        notes.append(f"interval clipped to [-1, 1] (normal approximation gave [{raw_low:.3f}, {raw_high:.3f}])")
    if se <= 1e-15:
        notes.append("zero variance of the difference: no interval")
    return {
        "auc_a": float(auc_a),
        "auc_b": float(auc_b),
        "diff": diff,
        "se": se,
        "z": None if z is None else float(z),
        "p_value": float(p_value),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n": int(labels.size),
        "n_malignant": int(m),
        "n_benign": int(n),
        "clipped": bool(clipped),
        "note": "; ".join(x for x in notes if x),
    }


def _point_value(labels, scores, metric: str, threshold: float | None) -> float | None:
    if threshold is not None:
        return at_threshold(labels, scores, threshold)[metric]
    return threshold_free(labels, scores)[metric]


def paired_bootstrap(
    y,
    p_a,
    p_b,
    *,
    metric: str = "auroc",
    threshold_a: float = 0.5,
    threshold_b: float = 0.5,
    groups=None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Paired bootstrap of metric(a) - metric(b): both models are scored on the same resamples.

    Returns ``{"metric", "value_a", "value_b", "diff", "ci": (low, high), "ci_low", "ci_high",
    "p_value", "n_boot", "valid", "unit", "n", "note"}``. The interval is a percentile interval of
    differences of metrics in [0, 1], so it stays inside [-1, 1]; ``note`` says when the sample is
    small (:mod:`.small_sample`), when fewer than 90% of the replicates defined the metric, or
    when the replicates take few distinct values (then the percentiles are coarse). ``diff`` is the difference on the full data; the CI
    is the percentile interval of the replicate differences; the two-sided p-value is
    min(1, 2 * min(#(d* <= 0) + 1, #(d* >= 0) + 1) / (valid + 1)) over valid replicates (the +1
    keeps it away from an impossible 0 with finitely many replicates). Replicates where the metric
    is undefined for either model are skipped; ``valid`` counts the rest.
    Threshold metrics use ``threshold_a`` / ``threshold_b`` (pred = p >= threshold).
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")
    labels = as_labels(y)
    scores_a = as_scores(p_a, name="p_a")
    scores_b = as_scores(p_b, name="p_b")
    if not labels.size == scores_a.size == scores_b.size:
        raise ValueError(
            f"y, p_a and p_b differ in length ({labels.size}, {scores_a.size}, {scores_b.size})"
        )
    n_boot, seed, alpha = _check_bootstrap_options(n_boot, seed, alpha)
    needs_threshold = metric in AT_THRESHOLD_NAMES
    cut_a = as_threshold(threshold_a, name="threshold_a") if needs_threshold else None
    cut_b = as_threshold(threshold_b, name="threshold_b") if needs_threshold else None

    value_a = _point_value(labels, scores_a, metric, cut_a)
    value_b = _point_value(labels, scores_b, metric, cut_b)
    # Same seed, groups and length -> the same resamples for both models (paired).
    resampling = {"groups": groups, "n_boot": n_boot, "seed": seed}
    replicates_a = bootstrap_replicates(labels, scores_a, threshold=cut_a, **resampling)[metric]
    replicates_b = bootstrap_replicates(labels, scores_b, threshold=cut_b, **resampling)[metric]
    differences = replicates_a - replicates_b
    low, high, valid = percentile_interval(differences, alpha)
    defined = differences[~np.isnan(differences)]
    if valid:
        at_or_below = int((defined <= 0).sum()) + 1
        at_or_above = int((defined >= 0).sum()) + 1
        p_value = min(1.0, 2.0 * min(at_or_below, at_or_above) / (valid + 1))
    else:
        p_value = None
    diff = None if value_a is None or value_b is None else value_a - value_b
    n_pos = int(labels.sum())
    notes = [DEFAULT_RULE.note(int(labels.size), n_pos, int(labels.size) - n_pos)]
    if n_boot and valid < 0.9 * n_boot:
        notes.append(f"only {valid} of {n_boot} replicates defined {metric} for both models")
    if valid and np.unique(np.round(defined, 12)).size < 20:
        notes.append(f"the replicate differences take {np.unique(np.round(defined, 12)).size} distinct values: "
                     f"the interval's bounds are coarse")
    if low is not None:
        low, high = max(-1.0, low), min(1.0, high)
    return {
        "metric": metric,
        "value_a": value_a,
        "value_b": value_b,
        "diff": diff,
        "ci": (low, high),
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "n_boot": n_boot,
        "valid": valid,
        "unit": "image" if groups is None else "group",
        "n": int(labels.size),
        "note": "; ".join(x for x in notes if x),
    }
