"""A loaded dataset (:class:`LesionDataset`), the object every paradigm, the runner and the tools
pass around. :func:`dermbench.data.contract.load_dataset` makes one from a dataset folder."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .. import BENIGN, MALIGNANT
from .exclusions import Exclusion, exclusion_frame

#: ``frame.attrs`` key holding the CSV line of each row (header = line 1), aligned with the rows.
CSV_LINES = "csv_lines"


class CsvLines(tuple):
    """Each row's line in its metadata CSV (``frame.attrs[CSV_LINES]``). Immutable and never
    copied: pandas deep-copies ``attrs`` on every operation on a frame, element by element for a
    list (10,000 rows: a large share of loading a warm dataset)."""

    def __deepcopy__(self, memo: dict) -> "CsvLines":
        return self


@dataclass
class LesionDataset:
    """A loaded dataset: one DataFrame per split plus what was excluded.

    Each split frame has, in this order: ``img_id`` (str), ``path`` (absolute image path),
    ``label`` (int, 1 = malignant), ``benign_malignant`` (normalised string), then the optional
    contract columns present (``patient_id``, ``lesion_id``, ...) and any other columns of the CSV.
    Missing values are NaN/None, never the string ``"nan"``. ``frame.attrs["csv_lines"]`` gives
    each row's line in its metadata CSV.
    """

    root: Path
    name: str
    splits: dict[str, pd.DataFrame]
    exclusions: list[Exclusion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""

    def split(self, name: str) -> pd.DataFrame:
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {BENIGN: int((df["label"] == 0).sum()), MALIGNANT: int((df["label"] == 1).sum())}
                for s, df in self.splits.items()}

    def exclusion_frame(self) -> pd.DataFrame:
        return exclusion_frame(self.exclusions)

    def csv_line(self, split: str, img_id: str) -> int | None:
        """The metadata-CSV line of ``img_id`` in ``split`` (None when unknown)."""
        frame = self.splits.get(split)
        if frame is None:
            return None
        lines = frame.attrs.get(CSV_LINES)
        hits = (frame["img_id"].astype(str) == str(img_id)).to_numpy().nonzero()[0]
        if lines is None or not len(hits) or hits[0] >= len(lines):
            return None
        return int(lines[hits[0]])

    def without(self, excluded: Iterable[Exclusion]) -> "LesionDataset":
        """A copy without the images of ``excluded`` (matched by split and img_id). The copy's
        ``exclusions`` are this dataset's own; the caller reports ``excluded`` with them."""
        drop: dict[str, set[str]] = {}
        for e in excluded:
            drop.setdefault(e.split, set()).add(e.img_id)
        splits = {}
        for name, frame in self.splits.items():
            keep = ~frame["img_id"].astype(str).isin(drop.get(name, set()))
            out = frame[keep].reset_index(drop=True)
            lines = frame.attrs.get(CSV_LINES)
            if lines is not None:
                out.attrs[CSV_LINES] = CsvLines(line for line, k in zip(lines, keep) if k)
            splits[name] = out
        return replace(self, splits=splits)

    def group_ids(self, split: str) -> pd.Series | None:
        """Units a bootstrap over ``split`` resamples (see :func:`dermbench.data.splits.bootstrap_groups`):
        patients and lesions kept together, None when the dataset has no ids (images)."""
        from .splits import bootstrap_groups

        df = self.split(split)
        keys, _unit = bootstrap_groups(df)
        return None if keys is None else pd.Series(keys, index=df.index, name="bootstrap_group")

    def summary(self) -> str:
        lines = [f"dataset {self.name} ({self.root})  fingerprint {self.fingerprint[:12]}"]
        for s, c in self.counts().items():
            lines.append(f"  {s:<10} {c[BENIGN] + c[MALIGNANT]:>7} images  "
                         f"{c[BENIGN]:>6} benign  {c[MALIGNANT]:>6} malignant")
        if self.exclusions:
            by_reason = Counter(e.reason for e in self.exclusions)
            parts = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items()))
            lines.append(f"  excluded {len(self.exclusions)} rows: {parts}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)
