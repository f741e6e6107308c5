"""Validation of labels, scores and group ids at the edge of every public metric function.

Every public function funnels its inputs through here so a bad input fails with one clear
message instead of a NaN or an exception deep inside numpy/scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_labels(y, *, name: str = "y") -> np.ndarray:
    """Return labels as an int64 array of 0/1 (1 = malignant); reject anything else."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one label per image), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        n_missing = int(pd.isna(arr).sum())
        if n_missing:
            raise ValueError(f"{name} contains {n_missing} missing label(s); labels must be 0 or 1")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must hold 0/1 labels (1 = malignant); got values of type {arr.dtype}. "
                "Map 'benign'/'malignant' to 0/1 first."
            ) from None
    if arr.dtype.kind == "f":
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} missing (NaN) label(s); labels must be 0 or 1")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        examples = sorted({str(v) for v in arr[bad][:5].tolist()})
        raise ValueError(
            f"{name} must hold only 0 (benign) and 1 (malignant); found {int(bad.sum())} other "
            f"value(s), e.g. {', '.join(examples)}"
        )
    return arr.astype(np.int64)


def as_scores(p, *, name: str = "p") -> np.ndarray:
    """Return p_malignant as float64; reject NaN (with a count), infinities and values outside [0, 1]."""
    raw = np.asarray(p)
    if raw.dtype.kind not in "iufb":
        n_missing = int(pd.isna(raw).sum()) if raw.dtype == object else 0
        if n_missing:
            raise ValueError(
                f"{name} contains {n_missing} missing (NaN/None) p_malignant value(s) of {raw.size}"
            )
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold p_malignant numbers in [0, 1]") from None
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one p_malignant per image), got shape {arr.shape}"
        )
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(
            f"{name} contains {n_nan} NaN p_malignant value(s) of {arr.size}; every image needs a "
            "score (a failed prediction must be recorded as such upstream, not passed as NaN)"
        )
    outside = (arr < 0.0) | (arr > 1.0) | ~np.isfinite(arr)
    if outside.any():
        raise ValueError(
            f"{name} must lie in [0, 1]; {int(outside.sum())} value(s) do not "
            f"(min {arr.min():g}, max {arr.max():g})"
        )
    return arr


def as_labels_scores(y, p, *, allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, p_malignant) pair of equal, non-zero length."""
    labels = as_labels(y)
    scores = as_scores(p)
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels and p_malignant differ in length ({labels.shape[0]} vs {scores.shape[0]}); "
            "align them by img_id first"
        )
    if labels.shape[0] == 0 and not allow_empty:
        raise ValueError("no predictions to score: labels and p_malignant are empty")
    return labels, scores


def as_threshold(threshold, *, name: str = "threshold") -> float:
    """An operating threshold: any finite number (outside [0, 1] means all benign / all malignant)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {threshold!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {threshold!r}")
    return value


def as_group_index(groups, n: int) -> tuple[np.ndarray, int]:
    """Map group ids (patient_id / lesion_id) to 0..G-1; missing ids are refused."""
    arr = np.asarray(groups, dtype=object)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"groups must have one id per image ({n}), got shape {arr.shape}")
    missing = np.array([_is_missing(v) for v in arr], dtype=bool)
    if missing.any():
        raise ValueError(
            f"groups contains {int(missing.sum())} missing id(s); give every image a patient/lesion "
            "id (e.g. its img_id) or pass groups=None for an image-level bootstrap"
        )
    _, index = np.unique(arr.astype(str), return_inverse=True)
    index = index.reshape(-1).astype(np.int64)
    return index, int(index.max()) + 1 if n else 0


def _is_missing(value) -> bool:
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))
