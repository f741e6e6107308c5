"""The probe's training set: label fraction / k-shot subsets and class balancing (pure functions).

All functions are seeded and return indices or arrays plus a small record of what they did, so
the run record states exactly which training set the head saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def label_subset(labels: np.ndarray, *, fraction: float = 1.0, k_shot: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """Sorted positions of a stratified, seeded subset of the training images.

    ``fraction``: that share of each class (rounded, at least one image per class);
    ``k_shot``: ``k`` images per class (all of a class that has fewer). Nested across
    fractions for one seed: the 5 % subset contains the 1 % subset (one permutation per class),
    which makes label-fraction curves monotone in data rather than resampled per point.
    """
    labels = np.asarray(labels).astype(int)
    if k_shot is None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        order = members[rng.permutation(len(members))]
        take = min(int(k_shot), len(members)) if k_shot is not None else max(1, int(round(fraction * len(members))))
        chosen.append(order[:take])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


def undersample(labels: np.ndarray, *, mode: str = "min_class", max_per_class: int | None = None,
                ratio: float = 1.0, seed: int = 0) -> np.ndarray:
    """Sorted positions kept by random undersampling (imbalanced-learn's ``RandomUnderSampler``).

    ``min_class``: every class down to the size of the smallest; ``max_per_class``: every class
    capped at ``max_per_class``; ``ratio``: every class capped at ``ratio`` × the minority's size,
    i.e. majority:minority at most ``ratio``.
    """
    from imblearn.under_sampling import RandomUnderSampler

    labels = np.asarray(labels).astype(int)
    classes, counts = np.unique(labels, return_counts=True)
    if mode == "min_class":
        cap = int(counts.min())
    elif mode == "max_per_class":
        if not max_per_class:
            raise ValueError("undersample mode max_per_class needs max_per_class")
        cap = int(max_per_class)
    elif mode == "ratio":
        if ratio < 1.0:
            raise ValueError(f"undersampling ratio is majority:minority and must be >= 1, got {ratio}")
        cap = int(np.ceil(ratio * counts.min()))
    else:
        raise ValueError(f"unknown undersampling mode {mode!r}; use min_class, max_per_class or ratio")
    if len(classes) < 2:  # imbalanced-learn refuses a single class: cap it with the same seed
        return np.sort(np.random.default_rng(seed).choice(len(labels), size=min(cap, len(labels)), replace=False))
    target = {int(c): min(cap, int(n)) for c, n in zip(classes, counts)}
    sampler = RandomUnderSampler(sampling_strategy=target, random_state=seed)
    sampler.fit_resample(np.zeros((len(labels), 1)), labels)
    return np.sort(sampler.sample_indices_)


def smote(X: np.ndarray, y: np.ndarray, *, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE oversampling of the minority class in embedding space (imbalanced-learn)."""
    from imblearn.over_sampling import SMOTE

    minority = int(np.bincount(np.asarray(y).astype(int)).min())
    if minority < 2:
        raise ValueError("SMOTE needs at least 2 training images of the minority class")
    sampler = SMOTE(k_neighbors=min(k, minority - 1), random_state=seed)
    Xr, yr = sampler.fit_resample(X, y)
    return np.asarray(Xr, dtype=np.float32), np.asarray(yr).astype(int)


def transform_features(X: np.ndarray, kind: str = "none") -> np.ndarray:
    """Element-wise feature transform applied identically to every split before the head.

    ``power``: signed square root, ``sign(x) * sqrt(|x|)`` — power normalisation (Perronnin et al.
    2010), which evens out the heavy-tailed activations of average-pooled CNN features so a
    linear head is not dominated by a few large channels.
    """
    if kind == "none":
        return X
    if kind == "power":
        return (np.sign(X) * np.sqrt(np.abs(X))).astype(np.float32)
    raise ValueError(f"unknown feature transform {kind!r}; use none or power")


def class_counts(y: np.ndarray) -> dict[str, int]:
    y = np.asarray(y).astype(int)
    return {"benign": int((y == 0).sum()), "malignant": int((y == 1).sum())}


def build_training_set(views: list[np.ndarray], labels: np.ndarray, settings: Any,
                       seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Training matrix from the per-view train embeddings (view 0 first, all in the same row order).

    Applies the label fraction / k-shot (on images; their augmented views follow them), then
    undersampling or SMOTE. Returns ``X, y`` and the record of each step.
    """
    labels = np.asarray(labels).astype(int)
    record: dict[str, Any] = {"images_available": class_counts(labels), "views_per_image": len(views)}
    keep = label_subset(labels, fraction=settings.label_fraction, k_shot=settings.k_shot, seed=seed)
    record["label_fraction"] = settings.label_fraction if settings.k_shot is None else None
    record["k_shot"] = settings.k_shot
    record["images_used"] = class_counts(labels[keep])
    X = np.concatenate([v[keep] for v in views]).astype(np.float32)
    y = np.concatenate([labels[keep]] * len(views))
    record["rows_before_balancing"] = class_counts(y)
    if settings.balance == "undersample":
        rows = undersample(y, mode=settings.undersample, max_per_class=settings.max_per_class,
                           ratio=settings.ratio, seed=seed)
        X, y = X[rows], y[rows]
        record["balance"] = {"method": "undersample", "mode": settings.undersample,
                             "max_per_class": settings.max_per_class, "ratio": settings.ratio}
    elif settings.balance == "smote":
        X, y = smote(X, y, k=settings.smote_k, seed=seed)
        record["balance"] = {"method": "smote", "k_neighbors": settings.smote_k, "library": "imbalanced-learn"}
    else:
        record["balance"] = {"method": "none"}
    record["rows_trained_on"] = class_counts(y)
    return X, y, record
