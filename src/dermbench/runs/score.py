"""Strict validation and scoring of a predictions CSV against a dataset's ground truth.

Modelled on the ISIC challenge scorer: the file is checked before anything is scored and every
problem is reported by name (wrong header, duplicate ids, missing or extra images, empty or
non-numeric values, values outside [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from ..errors import PredictionsError, quote

#: Rows read at a time: validation keeps per row only what the ground truth needs, so memory is
#: bounded by the truth set and one chunk, whatever the size of the file.
CHUNK_ROWS = 20_000
#: A line longer than this is not a prediction (an id of a million characters ...): refused before
#: the CSV parser would hold it in memory.
MAX_LINE_BYTES = 1 << 20


@dataclass
class PredictionsFile:
    """A predictions CSV read lazily, :data:`CHUNK_ROWS` rows at a time (see :func:`read_predictions_csv`)."""

    path: Path
    columns: list[str]
    chunk_rows: int = CHUNK_ROWS

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The ``img_id`` and ``p_malignant`` columns, as text, chunk by chunk."""
        wanted = [c for c in ("img_id", "p_malignant") if c in self.columns]
        try:
            reader = pd.read_csv(self.path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                                 chunksize=self.chunk_rows, skipinitialspace=False,
                                 usecols=lambda c: str(c).strip() in wanted)
            for chunk in reader:
                chunk.columns = [str(c).strip() for c in chunk.columns]
                yield chunk
        except UnicodeDecodeError as exc:
            raise PredictionsError(f"{self.path} is not UTF-8 text (byte {exc.start} of a block); save it as "
                                   f"UTF-8 CSV") from None
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise PredictionsError(f"{self.path} is not a readable CSV: {exc}") from None


def read_predictions_csv(path: str | Path) -> PredictionsFile:
    """Open a predictions CSV for validation: its header is read now, its rows while validating
    (:func:`validate_against_truth` streams them). A file with a line longer than
    :data:`MAX_LINE_BYTES` is refused here, after one pass in fixed-size blocks."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"predictions file {path} does not exist")
    _check_line_lengths(path)
    try:
        header = pd.read_csv(path, dtype=str, nrows=0, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PredictionsError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise PredictionsError(f"{path} is not a readable CSV: {exc}") from None
    return PredictionsFile(path, [str(c).strip() for c in header.columns])


def _check_line_lengths(path: Path, block: int = 1 << 20) -> None:
    line, length = 1, 0
    with open(path, "rb") as fh:
        while True:
            data = fh.read(block)
            if not data:
                return
            breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            if len(breaks) == 0:
                length += len(data)
            else:
                first = length + int(breaks[0])
                gaps = np.diff(breaks) - 1 if len(breaks) > 1 else np.zeros(0, dtype=np.int64)
                longest = int(gaps.max()) if len(gaps) else -1
                if first > MAX_LINE_BYTES:
                    too_long = line
                elif longest > MAX_LINE_BYTES:
                    too_long = line + 1 + int(np.argmax(gaps))
                else:
                    too_long = 0
                if too_long:
                    raise PredictionsError(f"{path}: line {too_long} is longer than {MAX_LINE_BYTES:,} bytes; a "
                                           f"predictions file has one short line per image (img_id,p_malignant)")
                line += len(breaks)
                length = len(data) - int(breaks[-1]) - 1
            if length > MAX_LINE_BYTES:
                raise PredictionsError(f"{path}: line {line} is longer than {MAX_LINE_BYTES:,} bytes; a "
                                       f"predictions file has one short line per image (img_id,p_malignant)")


@dataclass
class _Problems:
    """Counts and first examples of each problem, kept while the rows stream past."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, n: int, example: str) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + int(n)
            self.examples.setdefault(kind, example)


def validate_against_truth(pred: pd.DataFrame | PredictionsFile, truth: pd.DataFrame, *,
                           where: str = "predictions",
                           excluded: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Return ``img_id, label, p_malignant`` aligned to ``truth`` or raise :class:`PredictionsError`.

    ``pred`` needs ``img_id`` and ``p_malignant`` (a frame, or a :class:`PredictionsFile` read
    chunk by chunk, in memory bounded by the truth set); a ``label``/``pred`` column, if present, is
    ignored (the ground truth comes from the dataset). ``excluded`` maps the ids the dataset left
    out of this split (``img_id -> Exclusion``): predictions for them are not scored and are listed
    in ``frame.attrs["not_scored"]`` with the reason, instead of being called unknown images.
    """
    chunks: Iterable[pd.DataFrame] = [pred] if isinstance(pred, pd.DataFrame) else pred.chunks()
    columns = list(pred.columns)
    missing_cols = [need for need in ("img_id", "p_malignant") if need not in columns]
    if missing_cols:
        raise PredictionsError(f"{where}: " + "; ".join(
            f"missing column {need!r} (columns are {quote(columns)}; need img_id and p_malignant)"
            for need in missing_cols))

    expected = set(truth["img_id"].astype(str))
    # Accept ids given with or without the file extension, as the ISIC scorer accepts image names.
    stems = {Path(i).stem: i for i in expected}
    excluded = {str(k): v for k, v in (excluded or {}).items()}
    excluded_stems = {Path(k).stem: k for k in excluded}
    values: dict[str, float] = {}          # expected id -> p_malignant
    spelling: dict[str, str] = {}          # expected id -> the raw id that named it first
    raw_seen: set[str] = set()             # raw ids naming expected images (bounded by the truth set)
    duplicates: dict[str, int] = {}
    clashes: dict[str, set[str]] = {}
    not_scored: dict[str, str] = {}
    problems = _Problems()
    n_extra, extra_example = 0, ""

    for chunk in chunks:
        ids = chunk["img_id"].astype(str).str.strip().astype(object)  # object: filled from id -> image maps
        raw_p = chunk["p_malignant"].astype(str).str.strip()
        numbers = pd.to_numeric(raw_p, errors="coerce")
        empty = ids == ""
        problems.add("empty_id", empty.sum(), "")
        nan = raw_p.str.lower().isin(["nan", ""])
        bad_num = numbers.isna() & ~nan
        problems.add("not_number", bad_num.sum(), quote(raw_p[bad_num].iloc[0]) if bad_num.any() else "")
        problems.add("nan", nan.sum(), quote(ids[nan].iloc[0]) if nan.any() else "")
        infinite = numbers.notna() & ~np.isfinite(numbers.fillna(0.0))
        problems.add("infinite", infinite.sum(), quote(ids[infinite].iloc[0]) if infinite.any() else "")
        out_of_range = numbers.notna() & ~infinite & ((numbers < 0) | (numbers > 1))
        if out_of_range.any():
            first = out_of_range.to_numpy().nonzero()[0][0]
            problems.add("range", out_of_range.sum(), f"{quote(raw_p.iloc[first], 40)} for {quote(ids.iloc[first])}")
        named = ~empty
        stem = _stems(ids)
        image = ids.where(ids.isin(expected)).fillna(ids.map(stems)).fillna(stem.map(stems))
        unknown = named & image.isna()
        if unknown.any():
            gone = ids[unknown].where(ids[unknown].isin(set(excluded))).fillna(stem[unknown].map(excluded_stems))
            for gone_id in gone.dropna().unique():
                not_scored.setdefault(gone_id, _reason(excluded[gone_id]))
            really_extra = gone.isna()
            n_extra += int(really_extra.sum())
            if really_extra.any() and not extra_example:
                extra_example = quote(ids[unknown][really_extra].iloc[0])
        # rows naming images of the ground truth: at most a few per image, so a loop is bounded
        known = named & image.notna()
        known_ids, known_images, known_values = ids[known], image[known], numbers[known]
        repeated = known_ids.duplicated() | known_ids.isin(raw_seen)
        for raw_id in known_ids[repeated]:
            duplicates[raw_id] = duplicates.get(raw_id, 1) + 1
        for raw_id, img, value in zip(known_ids[~repeated], known_images[~repeated], known_values[~repeated]):
            raw_seen.add(raw_id)
            if img in spelling:
                clashes.setdefault(img, {spelling[img]}).add(raw_id)
                continue
            spelling[img] = raw_id
            values[img] = float(value)

    lines = []
    if problems.counts.get("empty_id"):
        lines.append(f"{problems.counts['empty_id']} row(s) have an empty img_id")
    if duplicates:
        lines.append(f"{len(duplicates)} duplicate img_id(s), e.g. {quote(next(iter(duplicates)))}")
    if problems.counts.get("not_number"):
        lines.append(f"{problems.counts['not_number']} p_malignant value(s) are not numbers, "
                     f"e.g. {problems.examples['not_number']}")
    if problems.counts.get("nan"):
        lines.append(f"{problems.counts['nan']} p_malignant value(s) are empty or NaN "
                     f"(e.g. img_id {problems.examples['nan']})")
    if problems.counts.get("infinite"):
        lines.append(f"p_malignant contains {problems.counts['infinite']} infinite value(s) "
                     f"(e.g. img_id {problems.examples['infinite']})")
    if problems.counts.get("range"):
        lines.append(f"{problems.counts['range']} p_malignant value(s) outside [0, 1], e.g. {problems.examples['range']}")
    if clashes:
        image, names = next(iter(clashes.items()))
        # Two rows that name the same image in different spellings ("a" and "a.jpg") are
        # duplicates too: otherwise the image would be scored twice.
        lines.append(f"{len(clashes)} image(s) given more than once under different names, "
                     f"e.g. {quote(image)} as {sorted(names)}")
    missing = sorted(expected - set(values) - set(clashes))
    if missing:
        lines.append(f"{len(missing)} image(s) of the ground truth have no prediction, e.g. {quote(missing[0])}")
    if n_extra:
        lines.append(f"{n_extra} prediction(s) for images not in the ground truth, e.g. {extra_example}")
    if lines:
        raise PredictionsError(f"{where} cannot be scored:\n  - " + "\n  - ".join(lines))
    aligned = pd.DataFrame({"img_id": list(values), "p_malignant": list(values.values())})
    keep = ["img_id", "label"] + [c for c in ("patient_id", "lesion_id", "source") if c in truth.columns]
    merged = truth[keep].merge(aligned, on="img_id", how="left")
    merged.attrs["not_scored"] = not_scored
    return merged


def _stems(ids: pd.Series) -> pd.Series:
    """``Path(i).stem`` of each id (the last path part without its last suffix), fast."""
    def stem(text: str) -> str:
        name = text.rpartition("/")[2]
        dot = name.rfind(".")
        return name[:dot] if 0 < dot < len(name) - 1 else name

    return pd.Series([stem(i) for i in ids], index=ids.index, dtype=object)


def _reason(exclusion: Any) -> str:
    reason = getattr(exclusion, "reason", str(exclusion))
    detail = getattr(exclusion, "detail", "")
    return f"{reason} ({detail})" if detail else str(reason)


def score_frame(frame: pd.DataFrame, *, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    from ..metrics import evaluate

    from ..data.splits import bootstrap_groups

    groups, unit = bootstrap_groups(frame)
    return evaluate(frame["label"].to_numpy(), frame["p_malignant"].to_numpy(), threshold=threshold,
                    groups=groups, n_boot=n_boot, seed=seed, group_unit=unit)
