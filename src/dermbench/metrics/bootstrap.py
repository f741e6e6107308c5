"""Bootstrap confidence intervals (percentile method) and the per-split ``evaluate`` record.

Resampling unit: when ``groups`` (patient or lesion ids) are given, whole groups are drawn with
replacement and every image of a drawn group comes along, as many times as the group was drawn;
otherwise images are drawn. Images of one patient are correlated, so an image-level bootstrap
would give intervals that are too narrow.

All replicates are computed at once as a (replicates x images) weight matrix on one sort of the
scores (see ``_engine``), so 1,000 replicates on a few thousand images take well under a second.
A replicate in which a metric is undefined (e.g. no malignant image drawn) is skipped for that
metric only; the number of valid replicates per metric is reported.
"""

from __future__ import annotations

import numpy as np

from . import _engine
from ._inputs import as_group_index, as_labels_scores, as_threshold
from ._undefined import reasons_for, to_optional_float
from .names import (
    CONFUSION_NAMES,
    DEFAULT_ECE_BINS,
    DEFAULT_PAUC_MIN_TPR,
    DEFAULT_SPECIFICITIES,
    METRIC_NAMES,
)
from .ranking import check_threshold_free_options
from .small_sample import DEFAULT_RULE

# Upper bound on replicates x images held in memory at once (float64: 8 bytes each).
_MAX_BATCH_CELLS = 2_000_000

GROUP_UNITS = ("patient", "lesion", "image", "group")


class BootstrapCI(dict):
    """``{metric: (ci_low, ci_high)}`` with the bookkeeping as attributes.

    Attributes: ``valid`` ({metric: number of replicates where it was defined}), ``n_boot``,
    ``seed``, ``alpha``, ``unit`` ("group" or "image").
    """

    def __init__(self, intervals, *, valid, n_boot, seed, alpha, unit):
        super().__init__(intervals)
        self.valid = valid
        self.n_boot = n_boot
        self.seed = seed
        self.alpha = alpha
        self.unit = unit


def _check_bootstrap_options(n_boot, seed, alpha) -> tuple[int, int, float]:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer (0 = no bootstrap), got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (0.05 for 95% intervals), got {alpha!r}")
    return int(n_boot), int(seed), alpha


def replicate_weights(
    rng: np.random.Generator, group_of_image: np.ndarray, n_groups: int, n_replicates: int
) -> np.ndarray:
    """(n_replicates, n_images) draw counts: groups drawn with replacement, images follow their group."""
    draws = rng.integers(0, n_groups, size=(n_replicates, n_groups))
    offsets = (np.arange(n_replicates) * n_groups)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_replicates * n_groups)
    counts = counts.reshape(n_replicates, n_groups).astype(np.float64)
    return counts[:, group_of_image]


def iter_replicate_weights(table: _engine.ScoreTable, groups, n_boot: int, seed: int):
    """Yield batches of replicate weights in the table's (sorted) image order. Deterministic in seed."""
    if groups is None:
        # Each image is its own unit, indexed by its position in the *input* order (not the
        # score-sorted order), so the same seed draws the same images for any model: paired.
        group_of_image = table.order
        n_groups = table.n
    else:
        index, n_groups = as_group_index(groups, table.n)
        group_of_image = index[table.order]
    rng = np.random.default_rng(seed)
    batch = max(1, min(n_boot, _MAX_BATCH_CELLS // max(table.n, n_groups, 1)))
    done = 0
    while done < n_boot:
        size = min(batch, n_boot - done)
        yield replicate_weights(rng, group_of_image, n_groups, size)
        done += size


def bootstrap_replicates(
    y,
    p,
    *,
    threshold: float | None,
    groups=None,
    n_boot: int = 1000,
    seed: int = 0,
    pauc_min_tpr: float = DEFAULT_PAUC_MIN_TPR,
    specificities=DEFAULT_SPECIFICITIES,
    ece_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, np.ndarray]:
    """Every metric on each of ``n_boot`` resamples: ``{metric: array of n_boot}``, NaN where undefined.

    The same ``seed``, ``groups`` and length give the same resamples whatever the scores, so two
    models scored on the same test set are resampled identically (paired).
    """
    labels, scores = as_labels_scores(y, p)
    n_boot, seed, _ = _check_bootstrap_options(n_boot, seed, 0.05)
    min_tpr, specs, names, bins = check_threshold_free_options(pauc_min_tpr, specificities, ece_bins)
    cut = None if threshold is None else as_threshold(threshold)
    table = _engine.ScoreTable(labels, scores)
    chunks: dict[str, list[np.ndarray]] = {}
    for weights in iter_replicate_weights(table, groups, n_boot, seed):
        values = _engine.all_metrics(
            table, weights, threshold=cut, pauc_min_tpr=min_tpr, specificities=specs,
            spec_names=names, ece_bins=bins,
        )
        for name, array in values.items():
            chunks.setdefault(name, []).append(array)
    if not chunks:  # n_boot == 0: the engine's metric names (computed once on the data), no replicates
        values = _engine.all_metrics(table, table.unit_weights(), threshold=cut, pauc_min_tpr=min_tpr,
                                     specificities=specs, spec_names=names, ece_bins=bins)
        return {name: np.empty(0) for name in values}
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def percentile_interval(replicates: np.ndarray, alpha: float) -> tuple[float | None, float | None, int]:
    """(low, high, n_valid) percentile interval over the defined (non-NaN) replicates."""
    valid = replicates[~np.isnan(replicates)]
    if valid.size == 0:
        return None, None, 0
    low, high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high), int(valid.size)


def bootstrap_ci(
    y,
    p,
    *,
    threshold: float,
    groups=None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    pauc_min_tpr: float = DEFAULT_PAUC_MIN_TPR,
) -> BootstrapCI:
    """Percentile bootstrap ``(1 - alpha)`` intervals for every metric in ``METRIC_NAMES``.

    Returns a :class:`BootstrapCI` (a dict ``{metric: (low, high)}``; ``(None, None)`` when no
    replicate defined the metric) whose ``.valid`` gives the number of valid replicates per metric.
    ``groups`` = patient/lesion id per image (group bootstrap) or None (image bootstrap).
    Reproducible: ``np.random.default_rng(seed)``.
    """
    n_boot, seed, alpha = _check_bootstrap_options(n_boot, seed, alpha)
    replicates = bootstrap_replicates(
        y, p, threshold=threshold, groups=groups, n_boot=n_boot, seed=seed, pauc_min_tpr=pauc_min_tpr
    )
    intervals, valid = {}, {}
    for name in METRIC_NAMES:
        low, high, count = percentile_interval(replicates[name], alpha)
        intervals[name] = (low, high)
        valid[name] = count
    return BootstrapCI(intervals, valid=valid, n_boot=n_boot, seed=seed, alpha=alpha,
                       unit="image" if groups is None else "group")


def evaluate(
    y,
    p,
    *,
    threshold: float,
    groups=None,
    group_unit: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    pauc_min_tpr: float = DEFAULT_PAUC_MIN_TPR,
) -> dict:
    """Everything reported for one split, as a JSON-serialisable dict::

        {"n", "n_malignant", "n_benign", "threshold", "pauc_min_tpr",
         "metrics": {name: {"value", "ci_low", "ci_high"}},   # every name in METRIC_NAMES
         "confusion": {"tn", "fp", "fn", "tp"},
         "undefined": {name: reason},                          # metrics whose value is None
         "small_sample": note,                                 # "" unless n < 100 or < 20 of a class
         "bootstrap": {"n_boot", "unit", "seed", "alpha", "method", "valid": {name: count}}}

    ``group_unit`` names what ``groups`` holds ("patient", "lesion", or "group" when not given);
    the unit is "image" without groups. ``n_boot=0`` skips the bootstrap (all CIs None).
    Values are plain floats/ints/None (no NaN), so ``json.dumps(..., allow_nan=False)`` works.
    """
    labels, scores = as_labels_scores(y, p)
    cut = as_threshold(threshold)
    n_boot, seed, alpha = _check_bootstrap_options(n_boot, seed, alpha)
    min_tpr, specs, names, bins = check_threshold_free_options(
        pauc_min_tpr, DEFAULT_SPECIFICITIES, DEFAULT_ECE_BINS
    )
    if groups is None:
        if group_unit not in (None, "image"):
            raise ValueError(f"group_unit={group_unit!r} was given but groups is None; pass the ids too")
        unit = "image"
    else:
        unit = group_unit or "group"
        if unit not in GROUP_UNITS:
            raise ValueError(f"group_unit must be one of {', '.join(GROUP_UNITS)}, got {group_unit!r}")

    table = _engine.ScoreTable(labels, scores)
    weights = table.unit_weights()
    point = _engine.all_metrics(
        table, weights, threshold=cut, pauc_min_tpr=min_tpr, specificities=specs,
        spec_names=names, ece_bins=bins,
    )
    confusion = _engine.confusion_counts(table, weights, cut)
    counts = {name: int(round(float(value[0]))) for name, value in confusion.items()}
    replicates = bootstrap_replicates(
        labels, scores, threshold=cut, groups=groups, n_boot=n_boot, seed=seed, pauc_min_tpr=min_tpr
    )

    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    metrics, valid = {}, {}
    for name in METRIC_NAMES:
        low, high, count = percentile_interval(replicates[name], alpha)
        metrics[name] = {"value": to_optional_float(point[name][0]), "ci_low": low, "ci_high": high}
        valid[name] = count
    undefined = reasons_for(
        METRIC_NAMES,
        {name: entry["value"] for name, entry in metrics.items()},
        n_pos=n_pos,
        n_neg=n_neg,
        n_pred_pos=counts["tp"] + counts["fp"],
        n_pred_neg=counts["tn"] + counts["fn"],
        threshold=cut,
    )
    return {
        "n": int(labels.size),
        "n_malignant": n_pos,
        "n_benign": n_neg,
        "threshold": cut,
        "pauc_min_tpr": min_tpr,
        "metrics": metrics,
        "confusion": {name: counts[name] for name in CONFUSION_NAMES},
        "undefined": undefined,
        "small_sample": DEFAULT_RULE.note(int(labels.size), n_pos, n_neg),
        "bootstrap": {
            "n_boot": n_boot,
            "unit": unit,
            "seed": seed,
            "alpha": alpha,
            "method": "percentile",
            "valid": valid,
        },
    }
