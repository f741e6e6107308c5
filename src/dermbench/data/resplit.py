"""A dataset split again with another seed, by the same policy (``split_seeds`` in a grid).

A fixed split and a deterministic head give the same numbers for every training seed: "sd 0.000
over 3 seeds" is then one run, not replication. Re-splitting the pooled train + validation + test
rows with other seeds, grouped and stratified exactly as the dataset was prepared, gives the
variance a reader expects from "mean ± sd": over splits. The re-split is made in memory when a
cell loads its dataset (:func:`resplit`); the dataset folder is not touched.

The policy comes from the card's ``split_spec`` (``prepare`` records ratios, group columns and
strata). A dataset without one (made by an older ``prepare``, ``synth``, ``merge`` or by hand) is
re-split with ratios equal to its current split sizes, grouped by ``patient_id``/``lesion_id``
(and ``similar_group``) where present, stratified by label; an official or ungrouped split is
re-split grouped, and the record says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pandas as pd

from .. import SPLITS
from .dataset import LesionDataset
from .splits import SplitSpec, split_frame

#: group columns a re-split keeps together when the card does not name them
DEFAULT_GROUP_COLUMNS = ("patient_id", "lesion_id", "similar_group")


def split_spec_of(dataset: LesionDataset) -> tuple[SplitSpec, str]:
    """The split specification a re-split of ``dataset`` follows, and where it came from."""
    recorded = dataset.card.get("split_spec") if isinstance(dataset.card, dict) else None
    columns = set().union(*(df.columns for df in dataset.splits.values())) if dataset.splits else set()
    if isinstance(recorded, dict) and recorded.get("ratios") and recorded.get("grouping") in ("grouped", None):
        group_by = tuple(recorded.get("group_by") or ())
        if "similar_group" in columns and "similar_group" not in group_by:
            group_by += ("similar_group",)
        return (SplitSpec(tuple(float(r) for r in recorded["ratios"]), group_by,  # type: ignore[arg-type]
                          tuple(recorded.get("stratify_by") or ())), "the card's split_spec")
    group_by = tuple(c for c in DEFAULT_GROUP_COLUMNS if c in columns)
    policy = dataset.card.get("split_policy") if isinstance(dataset.card, dict) else None
    given = policy.get("ratios") if isinstance(policy, dict) else None  # synth's card: {"ratios": {split: r}}
    if isinstance(given, dict) and all(s in given for s in SPLITS):
        ratios = tuple(float(given[s]) for s in SPLITS)
        origin = "the card's split ratios, grouped by " + (" and ".join(group_by) or "image (no ids)")
    else:
        sizes = [len(dataset.splits.get(s, ())) for s in SPLITS]
        total = sum(sizes) or 1
        ratios = tuple(round(n / total, 4) for n in sizes)
        origin = "the current split sizes, grouped by " + (" and ".join(group_by) or "image (no ids)")
    if isinstance(recorded, dict) and recorded.get("grouping") not in ("grouped", None):
        origin += f" (the dataset's own split is {recorded.get('grouping')}; the re-split is grouped)"
    return SplitSpec(ratios, group_by, ()), origin  # type: ignore[arg-type]


def resplit(dataset: LesionDataset, split_seed: int) -> LesionDataset:
    """``dataset`` with its rows split again by :func:`split_spec_of` with ``split_seed``.

    The result has its own fingerprint (the folder's fingerprint + the split seed and spec), so
    every cache keyed by dataset and split (pixels, embeddings) keeps the splits apart; the card
    gains ``resplit`` (seed, spec, origin, base fingerprint, counts) for the run record."""
    spec, origin = split_spec_of(dataset)
    frames = [df.assign(_split=s) for s, df in dataset.splits.items() if len(df)]
    if not frames:
        return dataset
    pooled = pd.concat(frames, ignore_index=True)
    if "benign_malignant" not in pooled.columns:
        pooled["benign_malignant"] = pooled["label"].map({1: "malignant", 0: "benign"})
    names, policy = split_frame(pooled, spec, seed=int(split_seed))
    splits = {s: pooled.loc[names == s].drop(columns="_split").reset_index(drop=True) for s in SPLITS}
    material = json.dumps({"base": dataset.fingerprint, "split_seed": int(split_seed), "ratios": list(spec.ratios),
                           "group_by": list(spec.group_by), "stratify_by": list(spec.stratify_by)}, sort_keys=True)
    fingerprint = hashlib.sha256(material.encode()).hexdigest()
    record: dict[str, Any] = {"split_seed": int(split_seed), "policy": policy, "spec_from": origin,
                              "base_fingerprint": dataset.fingerprint, "fingerprint": fingerprint,
                              "counts": {s: int(len(df)) for s, df in splits.items()},
                              "moved_from": {s: int((names[pooled["_split"] == s] != s).sum())
                                             for s in dataset.splits}}
    card = {**dataset.card, "resplit": record}
    return replace(dataset, splits=splits, card=card, fingerprint=fingerprint)
