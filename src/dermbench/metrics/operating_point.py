"""Metrics at an operating point: the image is called malignant when p_malignant >= threshold."""

from __future__ import annotations

import numpy as np

from . import _engine
from ._inputs import as_labels_scores, as_scores, as_threshold
from ._undefined import reasons_for, to_optional_float
from .names import AT_THRESHOLD_NAMES, CONFUSION_NAMES


def predict(p, threshold: float) -> np.ndarray:
    """Binary predictions: 1 (malignant) where ``p >= threshold``, else 0 (benign).

    The ``>=`` convention is used everywhere in dermbench (thresholds chosen on validation are
    observed scores, so the image with exactly that score is called malignant).
    """
    scores = as_scores(p)
    return (scores >= as_threshold(threshold)).astype(np.int64)


def at_threshold(y, p, threshold: float) -> dict:
    """Operating-point metrics and the confusion matrix, pred = ``p >= threshold``.

    Keys: ``accuracy, balanced_accuracy, macro_f1, sensitivity, specificity, ppv, npv`` (floats, or
    None where undefined) and ``tn, fp, fn, tp`` (ints).

    - ``balanced_accuracy`` = (sensitivity + specificity) / 2 (== scikit-learn's binary one).
    - ``macro_f1`` = mean of the F1 of the malignant and of the benign class (==
      ``f1_score(average="macro")`` with both classes present).
    - None where undefined, never a silent 0: sensitivity with no malignant image, specificity
      with no benign image, balanced_accuracy and macro_f1 unless both classes are present,
      ppv when no image is predicted malignant, npv when none is predicted benign. (The ISIC
      scorer returns 1.0 in these cases; we do not.) Use :func:`at_threshold_with_reasons` to get
      the reasons.
    """
    values, _ = at_threshold_with_reasons(y, p, threshold)
    return values


def at_threshold_with_reasons(y, p, threshold: float) -> tuple[dict, dict[str, str]]:
    """:func:`at_threshold` plus ``{name: reason}`` for the metrics that are None."""
    labels, scores = as_labels_scores(y, p)
    cut = as_threshold(threshold)
    table = _engine.ScoreTable(labels, scores)
    counts = _engine.confusion_counts(table, table.unit_weights(), cut)
    raw = _engine.operating_metrics(counts)
    values: dict = {name: to_optional_float(raw[name][0]) for name in AT_THRESHOLD_NAMES}
    confusion = {name: int(round(float(counts[name][0]))) for name in CONFUSION_NAMES}
    values.update(confusion)
    reasons = reasons_for(
        AT_THRESHOLD_NAMES,
        values,
        n_pos=confusion["tp"] + confusion["fn"],
        n_neg=confusion["tn"] + confusion["fp"],
        n_pred_pos=confusion["tp"] + confusion["fp"],
        n_pred_neg=confusion["tn"] + confusion["fn"],
        threshold=cut,
    )
    return values, reasons
