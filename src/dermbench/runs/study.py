"""The study's hard-label metrics of a cell (``extra.study_metrics`` in ``metrics.json``).

Every paradigm that records the study's own decision per image (a ``study_pred`` column:
``benign``/``malignant``/``error``) calls :func:`study_metrics_record`; the numbers are computed
by :mod:`dermbench.metrics.study` against the dataset's labels, with bootstrap intervals drawn
the way the cell's own metrics draw theirs (whole patients/lesions when the split has their ids,
the cell's seed and ``n_boot``). They stay an extra: dermbench's metrics are the cell's result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ..data.dataset import LesionDataset


def study_metrics_record(dataset: LesionDataset, scores: dict[str, pd.DataFrame], *, rule: str, n_boot: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """``{split: {study_macro_f1, study_accuracy, ..._ci_low/_ci_high, labels, n, n_error, n_dropped},
    "rule": rule}`` from each split's ``img_id, study_pred`` (an empty ``study_pred`` is an image the
    study would have dropped, e.g. a failed request: counted in ``n_dropped``)."""
    from ..data.splits import bootstrap_groups
    from ..metrics.study import study_classification_metrics, study_label_names, study_metric_intervals

    out: dict[str, Any] = {}
    for split, frame in scores.items():
        truth = dataset.split(split)
        keep = [c for c in ("img_id", "label", "patient_id", "lesion_id", "source") if c in truth.columns]
        merged = truth[keep].merge(frame[["img_id", "study_pred"]].astype({"img_id": str}), on="img_id", how="inner")
        answered = merged[merged["study_pred"].fillna("").astype(str) != ""].reset_index(drop=True)
        true = study_label_names(answered["label"].astype(int))
        pred = list(answered["study_pred"].astype(str))
        record = study_classification_metrics(true, pred)
        groups, _unit = bootstrap_groups(answered)
        record.update(study_metric_intervals(true, pred, groups=groups, n_boot=n_boot, seed=seed))
        record["n_dropped"] = int(len(merged) - len(answered))
        out[split] = record
    out["rule"] = rule
    return out
