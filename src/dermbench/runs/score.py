"""Strict validation and scoring of a predictions CSV against a dataset's ground truth.

Modelled on the ISIC challenge scorer: the file is checked before anything is scored and every
problem is reported by name (wrong header, duplicate ids, missing or extra images, empty or
non-numeric values, values outside [0, 1]).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import PredictionsError


def read_predictions_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"predictions file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PredictionsError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from exc
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise PredictionsError(f"{path} is not a readable CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def validate_against_truth(pred: pd.DataFrame, truth: pd.DataFrame, *, where: str = "predictions") -> pd.DataFrame:
    """Return ``img_id, label, p_malignant`` aligned to ``truth`` or raise :class:`PredictionsError`.

    ``pred`` needs ``img_id`` and ``p_malignant``; a ``label``/``pred`` column, if present, is
    ignored (the ground truth comes from the dataset).
    """
    problems: list[str] = []
    cols = list(pred.columns)
    for need in ("img_id", "p_malignant"):
        if need not in cols:
            problems.append(f"missing column {need!r} (columns are {cols}; need img_id and p_malignant)")
    if problems:
        raise PredictionsError(f"{where}: " + "; ".join(problems))
    ids = pred["img_id"].astype(str).str.strip()
    if (ids == "").any():
        problems.append(f"{int((ids == '').sum())} row(s) have an empty img_id")
    dups = ids[ids.duplicated(keep=False) & (ids != "")]
    if len(dups):
        problems.append(f"{dups.nunique()} duplicate img_id(s), e.g. {dups.iloc[0]!r}")
    raw_p = pred["p_malignant"].astype(str).str.strip()
    values = pd.to_numeric(raw_p, errors="coerce")
    bad_num = values.isna() & ~raw_p.str.lower().isin(["nan", ""])
    if bad_num.any():
        problems.append(f"{int(bad_num.sum())} p_malignant value(s) are not numbers, e.g. {raw_p[bad_num].iloc[0]!r}")
    nan = raw_p.str.lower().isin(["nan", ""])
    if nan.any():
        problems.append(f"{int(nan.sum())} p_malignant value(s) are empty or NaN (e.g. img_id {ids[nan].iloc[0]!r})")
    finite = values.dropna()
    if len(finite) and (~np.isfinite(finite)).any():
        problems.append("p_malignant contains infinite values")
    out_of_range = (values < 0) | (values > 1)
    if out_of_range.any():
        problems.append(f"{int(out_of_range.sum())} p_malignant value(s) outside [0, 1], "
                        f"e.g. {raw_p[out_of_range].iloc[0]} for {ids[out_of_range].iloc[0]!r}")
    expected = set(truth["img_id"].astype(str))
    # Accept ids given with or without the file extension, as the ISIC scorer accepts image names.
    stems = {Path(i).stem: i for i in expected}
    resolved = ids.map(lambda i: i if i in expected else stems.get(i, stems.get(Path(i).stem, i)))
    # Two rows that name the same image in different spellings ("a" and "a.jpg") are duplicates
    # too: otherwise the image would be scored twice.
    clashes = resolved[resolved.duplicated(keep=False) & ~ids.duplicated(keep=False) & (ids != "")]
    if len(clashes):
        problems.append(f"{clashes.nunique()} image(s) given more than once under different names, "
                        f"e.g. {clashes.iloc[0]!r} as {sorted(ids[resolved == clashes.iloc[0]])}")
    missing = sorted(expected - set(resolved))
    extra = sorted(set(resolved) - expected - {""})
    if missing:
        problems.append(f"{len(missing)} image(s) of the ground truth have no prediction, e.g. {missing[0]!r}")
    if extra:
        problems.append(f"{len(extra)} prediction(s) for images not in the ground truth, e.g. {extra[0]!r}")
    if problems:
        raise PredictionsError(f"{where} cannot be scored:\n  - " + "\n  - ".join(problems))
    aligned = pd.DataFrame({"img_id": resolved, "p_malignant": values.astype(float)})
    merged = truth[["img_id", "label"] + [c for c in ("patient_id", "lesion_id", "source") if c in truth.columns]].merge(
        aligned, on="img_id", how="left")
    return merged


def score_frame(frame: pd.DataFrame, *, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    from ..metrics import evaluate

    from ..data.splits import bootstrap_groups

    groups, unit = bootstrap_groups(frame)
    return evaluate(frame["label"].to_numpy(), frame["p_malignant"].to_numpy(), threshold=threshold,
                    groups=groups, n_boot=n_boot, seed=seed, group_unit=unit)
