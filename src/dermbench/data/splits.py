"""Train / validation / test splits: official where published, otherwise grouped and stratified.

A random image-level split of a dermatology dataset leaks: HAM10000 has up to six images of
the same lesion and PAD-UFES-20 several lesions per patient, so an image-level split puts near
copies of test images into training. Every non-official split here is therefore **grouped** (by
patient or lesion; no group in two splits) and **stratified** (by label, optionally × skin tone),
seeded, and deterministic for a given seed.

The algorithm is a deterministic greedy bin packing rather than ``StratifiedGroupKFold``: folds
only give equal parts, whereas we need arbitrary ratios (75/12.5/12.5, 70/15/15). Groups are
visited largest first (ties in a seeded random order); each goes to the split whose per-stratum
quota it fills best (largest relative shortfall, weighted by the group's own stratum counts).
On the full HAM10000 metadata this lands within a percentage point of 75/12.5/12.5 with zero
lesion overlap (see ``tests/test_splits.py``). It is the one split of the package: ``prepare``
(through :func:`split_frame`) and the synthetic dataset (``dermbench synth``) both use it.

The one exception is asked for by name: ``prepare --split ungrouped`` (:func:`image_level_split`)
reproduces the study's image-level stratified split, for comparison with its numbers. The card
records it (``split_grouping: ungrouped``) and the report marks every result on such a dataset
with :data:`LEAKY_SPLIT_NOTE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .. import SPLITS
from ..errors import UsageError

#: ``prepare --split``: ``grouped`` (by patient/lesion where the data has ids; the default) or
#: ``ungrouped`` (the study's image-level split). The card's ``split_grouping`` is one of these
#: or ``official`` (the published split was used).
SPLIT_GROUPINGS = ("grouped", "ungrouped")
#: How the report marks results on a dataset split ``ungrouped``.
LEAKY_SPLIT_NOTE = "leaky split (ungrouped, as the study)"


@dataclass(frozen=True)
class SplitSpec:
    """How a source is split when no official split exists.

    ``ratios`` are (train, validation, test) fractions; ``group_by`` are the id columns that
    group rows: rows sharing a value in *any* of them stay together (see :func:`group_keys`), and
    a row with none of them is its own group; ``stratify_by`` are extra columns crossed with the
    label for stratification.
    """

    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    group_by: tuple[str, ...] = ("patient_id", "lesion_id")
    stratify_by: tuple[str, ...] = ()

    def describe(self, group_col: str | None) -> str:
        r = "/".join(f"{100 * x:g}" for x in self.ratios)
        grouped = f"grouped by {group_col}" if group_col else "image-level (no patient or lesion ids)"
        strat = " × ".join(("label",) + tuple(self.stratify_by))
        # "target": with few images per stratum the split made can be far from it (prepare prints both)
        return f"target {r} stratified by {strat}, {grouped}"


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``"75/12.5/12.5"``, ``"0.7,0.15,0.15"`` or ``"70 15 15"`` into fractions summing to 1."""
    parts = [p for p in text.replace(",", "/").replace(" ", "/").split("/") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"split ratios {text!r}: expected three numbers like 70/15/15") from exc
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"split ratios {text!r}: expected three non-negative numbers like 70/15/15")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def grouped_stratified_split(
    labels: Sequence,
    groups: Sequence | None = None,
    ratios: Sequence[float] = (0.70, 0.15, 0.15),
    seed: int | Sequence[int] = 42,
    strata: Sequence | None = None,
) -> np.ndarray:
    """Assign each row to ``train``/``validation``/``test``.

    ``labels`` (and optional extra ``strata`` values, e.g. skin tone) define the strata whose
    proportions every split should keep; ``groups`` (patient or lesion ids; ``None`` = each row
    its own group) are never split. ``seed`` is anything :func:`numpy.random.default_rng`
    accepts. Returns an array of split names aligned with ``labels``.

    Groups are visited largest first; groups of equal size in the order of a seeded permutation
    of the (sorted) group keys. Each goes to the split with the largest shortfall for the strata
    it carries: per stratum, (target - assigned) / target, with the target counted as at least
    one image so that a stratum too small to reach every split does not dominate the choice.
    """
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    ratios_arr = np.asarray(ratios, dtype=float)
    if ratios_arr.shape != (3,) or ratios_arr.sum() <= 0 or (ratios_arr < 0).any():
        raise ValueError(f"ratios must be three non-negative numbers, got {list(ratios)}")
    ratios_arr = ratios_arr / ratios_arr.sum()
    if n == 0:
        return np.asarray([], dtype=object)
    if groups is None:
        group_keys = np.arange(n).astype(str)
    else:
        group_keys = np.asarray([str(g) for g in groups], dtype=object)
    if strata is None:
        stratum = np.asarray([str(x) for x in labels], dtype=object)
    else:
        stratum = np.asarray([f"{a}|{b}" for a, b in zip(labels, strata)], dtype=object)

    stratum_codes, stratum_index = np.unique(stratum, return_inverse=True)
    group_codes, group_index = np.unique(group_keys, return_inverse=True)
    n_groups, n_strata = len(group_codes), len(stratum_codes)
    # counts[g, k]: how many rows of stratum k group g holds
    counts = np.zeros((n_groups, n_strata), dtype=np.int64)
    np.add.at(counts, (group_index, stratum_index), 1)

    target = ratios_arr[:, None] * counts.sum(axis=0)[None, :]  # (3, K)
    assigned = np.zeros_like(target)
    visit = np.random.default_rng(seed).permutation(n_groups)
    order = visit[np.argsort(-counts.sum(axis=1)[visit], kind="stable")]  # largest first, seeded ties
    group_split = np.empty(n_groups, dtype=np.int64)
    active = ratios_arr > 0
    for g in order:
        c = counts[g]
        shortfall = ((target - assigned) / np.maximum(target, 1.0)) @ c
        shortfall = np.where(active, shortfall, -np.inf)
        best = int(np.argmax(shortfall))
        group_split[g] = best
        assigned[best] += c
    names = np.asarray(SPLITS, dtype=object)
    return names[group_split[group_index]]


def image_level_split(labels: Sequence, ratios: Sequence[float] = (0.70, 0.15, 0.15),
                      seed: int = 42) -> np.ndarray:
    """The study's image-level split: scikit-learn's ``train_test_split`` stratified by label,
    first train against the rest, then the rest into validation and test, with
    ``random_state=seed`` both times (the study's notebooks: 0.30 then 0.50, seed 42).

    Images of one patient or lesion can land in different splits: this is the leaky split the
    study used, available for comparison only. The same images as the study's cannot be
    recovered (its row order and shuffles before splitting are not published).
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels, dtype=object)
    ratios_arr = np.asarray(ratios, dtype=float)
    if ratios_arr.shape != (3,) or ratios_arr.sum() <= 0 or (ratios_arr < 0).any():
        raise ValueError(f"ratios must be three non-negative numbers, got {list(ratios)}")
    train_r, val_r, test_r = ratios_arr / ratios_arr.sum()
    names = np.full(len(labels), SPLITS[0], dtype=object)
    index = np.arange(len(labels))
    try:
        if val_r + test_r > 0:
            _, rest = (index[:0], index) if train_r == 0 else train_test_split(
                index, test_size=float(val_r + test_r), stratify=labels, random_state=seed)
            names[rest] = SPLITS[2]
            if val_r > 0 and test_r > 0:
                validation, _ = train_test_split(rest, test_size=float(test_r / (val_r + test_r)),
                                                 stratify=labels[rest], random_state=seed)
                names[validation] = SPLITS[1]
            elif val_r > 0:
                names[rest] = SPLITS[1]
    except ValueError as exc:  # a class too small to appear in every split
        counts = dict(zip(*np.unique(labels.astype(str), return_counts=True)))
        raise UsageError(f"--split ungrouped: cannot stratify {len(labels)} images ({counts}) into "
                         f"{'/'.join(f'{100 * r:g}' for r in (train_r, val_r, test_r))} by label ({exc}); "
                         f"use the default grouped split") from exc
    return names


def group_keys(frame: pd.DataFrame, candidates: Sequence[str]) -> tuple[np.ndarray | None, list[str], int]:
    """One group key per row such that no patient and no lesion is split.

    Rows that share a value in any of the ``candidates`` columns present (e.g. the same
    ``patient_id``, or the same ``lesion_id``) are joined into one group (connected components),
    so a group is never split even when some rows lack one of the ids; a row with no id at all is
    its own group. Picking a single "complete" column instead would fall back to an image-level
    split as soon as one row lacked the patient id, and put that patient's other images in two
    splits. Returns (keys or None when no id column has a value, columns used, rows without id).
    """
    used = [c for c in candidates if c in frame.columns
            and frame[c].map(lambda v: not _missing_id(v)).any()]
    if not used:
        return None, [], len(frame)
    n = len(frame)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    has_id = np.zeros(n, dtype=bool)
    for col in used:
        first: dict[str, int] = {}
        for i, v in enumerate(frame[col].tolist()):
            if _missing_id(v):
                continue
            has_id[i] = True
            j = first.setdefault(str(v).strip(), i)
            if j != i:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = [find(i) for i in range(n)]
    # Name each group by its first id in the first column used (so a plain patient or lesion
    # grouping keeps the published ids as keys, and the seeded split does not change with this
    # generalisation); rows without that id get a key no id can collide with.
    name: dict[int, str] = {}
    for r, v in zip(roots, frame[used[0]].tolist()):
        if not _missing_id(v):
            name.setdefault(r, str(v).strip())
    keys = np.asarray([name.get(r, f"\x00row{r}") for r in roots], dtype=object)
    return keys, used, int((~has_id).sum())


def bootstrap_groups(frame: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """The resampling units of a bootstrap over ``frame``'s rows, and their name.

    The same connected grouping as the splits (rows sharing a patient *or* a lesion id stay
    together; a row without any id is its own unit), with ids namespaced by ``source`` when the
    frame has one, so patient "17" of two merged datasets are two patients. The unit is
    ``"patient"`` or ``"lesion"`` when every row has that id and only that one, ``"group"`` for
    the mixed case, and ``(None, "image")`` when there are no ids at all.
    """
    id_cols = [c for c in ("patient_id", "lesion_id") if c in frame.columns]
    if not id_cols:
        return None, "image"
    ids = frame[id_cols].copy()
    if "source" in frame.columns:
        source = frame["source"].astype(str)
        for col in id_cols:
            ids[col] = [None if _missing_id(v) else f"{s}\x1f{v}" for s, v in zip(source, frame[col])]
    keys, used, n_without = group_keys(ids, id_cols)
    if keys is None:
        return None, "image"
    if n_without:
        return keys, "group"  # patients/lesions, and images without an id on their own
    return keys, {("patient_id",): "patient", ("lesion_id",): "lesion"}.get(tuple(used), "group")


def _missing_id(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def split_frame(frame: pd.DataFrame, spec: SplitSpec, seed: int = 42,
                label_col: str = "benign_malignant", grouping: str = "grouped") -> tuple[pd.Series, str]:
    """Split a prepared frame per ``spec``; returns (split names aligned to frame, policy text).

    ``grouping="ungrouped"`` ignores ``spec.group_by`` and ``spec.stratify_by`` and makes the
    study's image-level split (:func:`image_level_split`), stratified by label only as the study's.
    """
    if grouping not in SPLIT_GROUPINGS:
        raise UsageError(f"--split {grouping!r}: choose one of {', '.join(SPLIT_GROUPINGS)}")
    if grouping == "ungrouped":
        names = image_level_split(frame[label_col].to_numpy(), spec.ratios, seed=seed)
        r = "/".join(f"{100 * x:g}" for x in spec.ratios)
        policy = (f"{r} stratified by label, image-level: ungrouped as the study (scikit-learn train_test_split, "
                  f"random_state {seed}); {LEAKY_SPLIT_NOTE.split(' (')[0]} where a patient or lesion has "
                  f"several images")
        return pd.Series(names, index=frame.index, name="split"), policy
    groups, used, n_without = group_keys(frame, spec.group_by)
    group_col = " + ".join(used) or None
    if group_col and n_without:
        group_col += f" ({n_without} row(s) without an id are their own group)"
    strata = None
    if spec.stratify_by:
        cols = [c for c in spec.stratify_by if c in frame.columns]
        if cols:
            strata = frame[cols].astype(object).where(frame[cols].notna(), "unknown").astype(str) \
                .agg("|".join, axis=1).to_numpy()
    names = grouped_stratified_split(
        frame[label_col].to_numpy(),
        groups,
        spec.ratios,
        seed=seed,
        strata=strata,
    )
    policy = spec.describe(group_col) + f", seed {seed}"
    return pd.Series(names, index=frame.index, name="split"), policy


def group_overlap(frame: pd.DataFrame, group_col: str, split_col: str = "split") -> dict[str, list[str]]:
    """Groups that appear in more than one split: ``{group: [splits]}`` (empty when clean)."""
    sub = frame[[group_col, split_col]].dropna()
    per_group = sub.groupby(group_col)[split_col].unique()
    return {str(g): sorted(map(str, s)) for g, s in per_group.items() if len(s) > 1}
