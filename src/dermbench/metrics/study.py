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


def argmax_predictions(p_malignant: Sequence[float]) -> list[str]:
    """The study's decision for two-logit models and its MLP: malignant only when P > 0.5
    (``argmax`` picks benign on a tie, and the MLP tested ``softmax[:, 1] > 0.5``)."""
    p = np.asarray(p_malignant, dtype=float)
    return [STUDY_CLASSES[int(v)] for v in (p > 0.5)]
