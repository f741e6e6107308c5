"""The MICCAI 2026 study's own classification metrics, as an extra beside dermbench's.

The study scored hard labels only: ``benign``/``malignant`` and, for generative VLMs, ``error``
when its parser found no single label (STUDY.md §5.4, §6.6). Its macro-averaged F1 runs over
``sorted(set(true) | set(predicted))``: a predicted ``error`` becomes a third class whose F1 is
always 0 (it is never a true label), which lowers the macro average by a third rather than
counting the image as a plain miss. dermbench's own metrics score such answers as wrong instead
(see ``paradigms/zeroshot/parsing.py``); these numbers exist only so a run can be set beside the
paper's table. They are recorded as ``study_macro_f1`` / ``study_accuracy``, never as
``macro_f1``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: The study's label strings (index = class id, benign = 0).
STUDY_CLASSES = ("benign", "malignant")
ERROR = "error"


def study_label_names(labels: Sequence[int]) -> list[str]:
    """0/1 labels -> the study's strings."""
    return [STUDY_CLASSES[int(v)] for v in labels]


def study_classification_metrics(true: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """The study's accuracy and macro precision/recall/F1 of string labels (``error`` included).

    Computed as the study's ``metrics_helper`` did with scikit-learn: ``labels`` = the sorted
    union of true and predicted strings, ``average="macro"``, ``zero_division=0``. Returns
    ``study_accuracy``, ``study_macro_precision``, ``study_macro_recall``, ``study_macro_f1``,
    ``labels``, ``n``, ``n_error`` (None for the metrics when there are no rows)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    true = [str(t).lower() for t in true]
    pred = [str(p).lower() for p in pred]
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true labels but {len(pred)} predictions")
    labels = sorted(set(true) | set(pred))
    out: dict[str, Any] = {"labels": labels, "n": len(true), "n_error": int(sum(p == ERROR for p in pred))}
    if not true:
        out.update(study_accuracy=None, study_macro_precision=None, study_macro_recall=None, study_macro_f1=None)
        return out
    kw = dict(labels=labels, average="macro", zero_division=0)
    out["study_accuracy"] = round(float(accuracy_score(true, pred)), 6)
    out["study_macro_precision"] = round(float(precision_score(true, pred, **kw)), 6)
    out["study_macro_recall"] = round(float(recall_score(true, pred, **kw)), 6)
    out["study_macro_f1"] = round(float(f1_score(true, pred, **kw)), 6)
    return out


def _weighted_f1_accuracy(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int,
                          weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(macro-F1, accuracy) per replicate row of ``weights`` (draw counts per image), the study's
    way: the classes are those present (true or predicted) in the replicate, F1 0 where undefined."""
    f1s, present = [], []
    for c in range(n_classes):
        t, q = true_idx == c, pred_idx == c
        tp = weights[:, t & q].sum(axis=1)
        n_true, n_pred = weights[:, t].sum(axis=1), weights[:, q].sum(axis=1)
        denom = n_true + n_pred
        f1s.append(np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0))
        present.append(denom > 0)
    f1 = np.stack(f1s, axis=1)
    mask = np.stack(present, axis=1)
    macro = np.divide((f1 * mask).sum(axis=1), mask.sum(axis=1), out=np.full(len(weights), np.nan),
                      where=mask.sum(axis=1) > 0)
    total = weights.sum(axis=1)
    accuracy = np.divide(weights[:, true_idx == pred_idx].sum(axis=1), total, out=np.full(len(weights), np.nan),
                         where=total > 0)
    return macro, accuracy


def study_metric_intervals(true: Sequence[str], pred: Sequence[str], *, groups: Any = None, n_boot: int = 1000,
                           seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Bootstrap percentile intervals of ``study_macro_f1`` and ``study_accuracy``, resampling as
    dermbench's own metrics do (whole patients/lesions when ``groups`` is given; the same seed and
    draws as :func:`dermbench.metrics.bootstrap.bootstrap_ci` for the same ``groups`` and length).
    Keys ``<metric>_ci_low``, ``<metric>_ci_high`` (None when there are no replicates)."""
    from ._inputs import as_group_index
    from .bootstrap import percentile_interval, replicate_weights

    true = [str(t).lower() for t in true]
    pred = [str(p).lower() for p in pred]
    names = sorted(set(true) | set(pred))
    out: dict[str, Any] = {f"{m}_ci_{side}": None for m in ("study_macro_f1", "study_accuracy")
                           for side in ("low", "high")}
    n = len(true)
    if n == 0 or n_boot <= 0:
        return out
    true_idx = np.array([names.index(t) for t in true])
    pred_idx = np.array([names.index(p) for p in pred])
    if groups is None:
        group_of_image, n_groups = np.arange(n), n
    else:
        group_of_image, n_groups = as_group_index(groups, n)
    weights = replicate_weights(np.random.default_rng(seed), group_of_image, n_groups, int(n_boot))
    macro, accuracy = _weighted_f1_accuracy(true_idx, pred_idx, len(names), weights)
    for metric, values in (("study_macro_f1", macro), ("study_accuracy", accuracy)):
        low, high, _ = percentile_interval(values, alpha)
        out[f"{metric}_ci_low"] = None if low is None else round(low, 6)
        out[f"{metric}_ci_high"] = None if high is None else round(high, 6)
    out["ci"] = {"n_boot": int(n_boot), "seed": int(seed), "alpha": alpha,
                 "unit": "image" if groups is None else "group"}
    return out


def argmax_predictions(p_malignant: Sequence[float]) -> list[str]:
    """The study's decision for two-logit models and its MLP: malignant only when P > 0.5
    (``argmax`` picks benign on a tie, and the MLP tested ``softmax[:, 1] > 0.5``)."""
    p = np.asarray(p_malignant, dtype=float)
    return [STUDY_CLASSES[int(v)] for v in (p > 0.5)]
