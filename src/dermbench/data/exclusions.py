"""The one record of an image (or metadata row) that was not used, and why.

Every place that leaves an image out writes an :class:`Exclusion`: the contract loader (a row it
cannot use), the decode check and the image cache (a file that does not decode), a paradigm that
finds an image unreadable at training or embedding time, and ``dermbench prepare`` (rows of the
published metadata it drops). A run writes them to ``exclusions.csv`` with :func:`exclusion_frame`;
nothing is dropped without one. A zeroshot cell records its failed requests with the same record
(``work/failed_requests.csv``, reason ``request_failed``), though those images stay in the
evaluation, scored as wrong.

The reason codes are stable strings: they appear in run records, cards and reports.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import pandas as pd

# --- rows of a metadata CSV (contract loader) ----------------------------------------------------
REASON_MISSING_ID = "missing_img_id"
REASON_UNSAFE_ID = "unsafe_img_id"
REASON_DUPLICATE_ID = "duplicate_img_id"
REASON_MISSING_LABEL = "missing_label"
REASON_UNKNOWN_LABEL = "unknown_label"
# --- image files (decoding) -----------------------------------------------------------------------
REASON_MISSING_IMAGE = "missing_image"
REASON_UNSUPPORTED = "unsupported_format"
REASON_UNREADABLE = "unreadable_image"
REASON_TRUNCATED = "truncated_image"
REASON_EMPTY = "empty_image"
REASON_TOO_LARGE = "image_too_large"  # more pixels than dermbench.data.images.MAX_IMAGE_PIXELS
#: Reasons that mean "the image file cannot be used" (the audit lists these as unreadable).
IMAGE_REASONS = (REASON_MISSING_IMAGE, REASON_UNSUPPORTED, REASON_UNREADABLE, REASON_TRUNCATED, REASON_EMPTY,
                 REASON_TOO_LARGE)
# --- paradigms -------------------------------------------------------------------------------------
REASON_REQUEST_FAILED = "request_failed"
# --- transfer evaluation: a target image the training cell has already seen (data/leaks.py) ---------
REASON_TRANSFER_SAME_IMAGE = "transfer_same_image"          # same img_id from the same origin
REASON_TRANSFER_EXACT_DUPLICATE = "transfer_exact_duplicate"  # same file bytes (sha256)
REASON_TRANSFER_NEAR_DUPLICATE = "transfer_near_duplicate"    # a re-encoded copy (pHash + colour layout)
REASON_TRANSFER_SAME_LESION = "transfer_same_lesion"        # another image of a lesion/patient trained on
TRANSFER_REASONS = (REASON_TRANSFER_SAME_IMAGE, REASON_TRANSFER_EXACT_DUPLICATE, REASON_TRANSFER_NEAR_DUPLICATE,
                    REASON_TRANSFER_SAME_LESION)

#: Columns of ``exclusions.csv``, in order.
EXCLUSION_COLUMNS = ("split", "row", "img_id", "reason", "detail")


@dataclass(frozen=True, kw_only=True)
class Exclusion:
    """One image left out, and why.

    ``split`` is the split it belonged to ("" for rows dropped before splitting, while preparing a
    dataset); ``reason`` a reason code; ``detail`` a free-text explanation; ``row`` the line of
    ``<split>_metadata.csv`` it came from (header = line 1), or None when it did not come from one.
    """

    split: str
    img_id: str
    reason: str
    detail: str = ""
    row: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as one ``exclusions.csv`` row (keys in :data:`EXCLUSION_COLUMNS` order)."""
        values = asdict(self)
        return {column: values[column] for column in EXCLUSION_COLUMNS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Exclusion":
        """Inverse of :meth:`as_dict`, also for a row read back from ``exclusions.csv`` (NaN = none)."""
        def text(value: Any) -> str:
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

        row = values.get("row")
        missing_row = row is None or (isinstance(row, float) and math.isnan(row)) or row == ""
        return cls(split=text(values.get("split")), img_id=text(values.get("img_id")),
                   reason=text(values.get("reason")), detail=text(values.get("detail")),
                   row=None if missing_row else int(row))

    def with_detail_prefix(self, prefix: str) -> "Exclusion":
        """The same record with ``prefix`` in front of its detail (says where it was found)."""
        detail = f"{prefix}: {self.detail}" if self.detail else prefix
        return Exclusion(split=self.split, img_id=self.img_id, reason=self.reason, detail=detail, row=self.row)

    def __str__(self) -> str:
        from ..errors import quote

        where = f"{self.split}_metadata.csv line {self.row}" if self.row is not None else (self.split or "dataset")
        detail = self.detail if len(self.detail) <= 300 else f"{self.detail[:300]}... (+{len(self.detail) - 300} more)"
        return f"{where} img_id={quote(self.img_id)}: {self.reason}" + (f" ({detail})" if detail else "")


def exclusions_for(img_ids: Iterable[Any], reason: str, detail: str = "", split: str = "") -> list[Exclusion]:
    """One record per id, all for the same reason (e.g. rows a source's label table drops)."""
    return [Exclusion(split=split, img_id=str(i), reason=reason, detail=detail) for i in img_ids]


def exclusion_frame(exclusions: Iterable[Exclusion]) -> pd.DataFrame:
    """The ``exclusions.csv`` table of ``exclusions`` (``row`` as a nullable integer)."""
    frame = pd.DataFrame([e.as_dict() for e in exclusions], columns=list(EXCLUSION_COLUMNS))
    frame["row"] = frame["row"].astype("Int64")
    return frame


def read_exclusions(frame: pd.DataFrame) -> list[Exclusion]:
    """``exclusions.csv`` (as read by pandas) back into records."""
    return [Exclusion.from_dict(values) for values in frame.to_dict("records")]


def stored_exclusion(entry: Any) -> Exclusion:
    """An exclusion as a cache's ``meta.json`` stores it: an :meth:`Exclusion.as_dict` dict, or the
    ``[split, img_id, reason, detail]`` list that caches written before this record type hold."""
    if isinstance(entry, dict):
        return Exclusion.from_dict(entry)
    split, img_id, reason, detail = entry
    return Exclusion(split=str(split), img_id=str(img_id), reason=str(reason), detail=str(detail))


def count_by_reason(exclusions: Iterable[Exclusion]) -> dict[str, int]:
    """Number of exclusions per reason code, by reason name."""
    return dict(sorted(Counter(e.reason for e in exclusions).items()))


def summarise_by_reason(exclusions: Iterable[Exclusion], examples: int = 10) -> list[dict[str, Any]]:
    """One entry per (reason, detail), in first-seen order, for a dataset card:
    ``{"reason", "count", "detail", "examples": [img_id, ...]}``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for e in exclusions:
        groups.setdefault((e.reason, e.detail), []).append(e.img_id)
    return [{"reason": reason, "count": len(ids), "detail": detail, "examples": ids[:examples]}
            for (reason, detail), ids in groups.items()]
