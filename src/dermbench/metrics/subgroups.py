"""Per-subgroup metrics (Fitzpatrick group, sex, age band, site, source, modality) and the
helpers that turn raw metadata into subgroup labels."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ._inputs import as_labels_scores, as_threshold
from .operating_point import at_threshold
from .ranking import threshold_free

UNKNOWN = "unknown"
FLAG_OK = "ok"
FLAG_SMALL = "small"

SUBGROUP_COLUMNS = (
    "subgroup", "value", "n", "n_malignant", "n_benign",
    "auroc", "sensitivity", "specificity", "balanced_accuracy", "flag",
)

_METRIC_COLUMNS = ("auroc", "sensitivity", "specificity", "balanced_accuracy")

_MISSING_TOKENS = {
    "", "nan", "none", "na", "n/a", "null", "unknown", "missing", "not available", "-1", "-1.0",
}


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS


def subgroup_table(
    y,
    p,
    subgroup_values,
    *,
    threshold: float,
    min_n: int = 30,
    name: str = "subgroup",
) -> pd.DataFrame:
    """One row per subgroup value with its size and AUROC / sensitivity / specificity /
    balanced accuracy at ``threshold`` (pred = p >= threshold).

    Columns: ``subgroup`` (= ``name``, e.g. "fitzpatrick"), ``value``, ``n``, ``n_malignant``,
    ``n_benign``, ``auroc``, ``sensitivity``, ``specificity``, ``balanced_accuracy``, ``flag``.
    Missing values (None, NaN, "", "unknown", -1) form their own ``"unknown"`` row, listed last;
    other rows are sorted by value. ``flag`` is ``"small"`` when n < ``min_n`` or a class is
    missing in the subgroup (its numbers are shown but must not be ranked), else ``"ok"``.
    Undefined metrics are None (e.g. AUROC of a one-class subgroup).
    """
    labels, scores = as_labels_scores(y, p)
    cut = as_threshold(threshold)
    values = np.asarray(subgroup_values, dtype=object)
    if values.ndim != 1 or values.shape[0] != labels.shape[0]:
        raise ValueError(
            f"subgroup_values must have one entry per image ({labels.shape[0]}), got shape {values.shape}"
        )
    if int(min_n) != min_n or min_n < 0:
        raise ValueError(f"min_n must be a non-negative integer, got {min_n!r}")
    keys = np.array([UNKNOWN if _is_missing(v) else str(v) for v in values], dtype=object)
    known = sorted({k for k in keys if k != UNKNOWN}, key=_natural_key)
    ordered = known + ([UNKNOWN] if (keys == UNKNOWN).any() else [])

    rows = []
    for key in ordered:
        mask = keys == key
        y_g, p_g = labels[mask], scores[mask]
        n_pos = int(y_g.sum())
        n_neg = int(mask.sum()) - n_pos
        auroc = threshold_free(y_g, p_g)["auroc"]
        operating = at_threshold(y_g, p_g, cut)
        small = mask.sum() < min_n or n_pos == 0 or n_neg == 0
        rows.append({
            "subgroup": name,
            "value": key,
            "n": int(mask.sum()),
            "n_malignant": n_pos,
            "n_benign": n_neg,
            "auroc": auroc,
            "sensitivity": operating["sensitivity"],
            "specificity": operating["specificity"],
            "balanced_accuracy": operating["balanced_accuracy"],
            "flag": FLAG_SMALL if small else FLAG_OK,
        })
    # Metric columns are object dtype so an undefined value stays None (not a silent NaN);
    # use pd.to_numeric(frame[column]) for arithmetic or plotting.
    columns = {
        column: pd.Series([row[column] for row in rows], dtype=object if column in _METRIC_COLUMNS else None)
        for column in SUBGROUP_COLUMNS
    }
    return pd.DataFrame(columns, columns=list(SUBGROUP_COLUMNS))


def _natural_key(text: str):
    """Sort "2" before "10" and "<30" before "30-49" sensibly: numbers compare as numbers, and a
    leading "<" (an open lower band) sorts before every band that starts at a number."""
    below = 0 if text.startswith("<") else 1
    return [(below,)] + [(0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
                         for part in re.split(r"(\d+(?:\.\d+)?)", text.lstrip("<")) if part]


# --- Fitzpatrick skin type -----------------------------------------------------------------

FITZPATRICK_GROUPS = ("I-II", "III-IV", "V-VI")
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}
_GROUPED = {"12": "I-II", "34": "III-IV", "56": "V-VI",
            "I-II": "I-II", "III-IV": "III-IV", "V-VI": "V-VI"}


def _fitzpatrick_one(value) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Fitzpatrick value {value!r} is not a skin type")
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if number == -1:
            return None
        if number.is_integer() and 1 <= number <= 6:
            return FITZPATRICK_GROUPS[(int(number) - 1) // 2]
        if number in (12, 34, 56):
            return _GROUPED[str(int(number))]
        raise ValueError(_fitzpatrick_error(value))
    text = str(value).strip().upper().replace(" ", "").replace("–", "-")
    for prefix in ("FITZPATRICK", "FST", "TYPE"):
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip(":-_")
    if text in _GROUPED:
        return _GROUPED[text]
    if text in _ROMAN:
        return FITZPATRICK_GROUPS[(_ROMAN[text] - 1) // 2]
    try:
        return _fitzpatrick_one(float(text))
    except ValueError:
        raise ValueError(_fitzpatrick_error(value)) from None


def _fitzpatrick_error(value) -> str:
    return (
        f"unrecognised Fitzpatrick value {value!r}; expected I-VI, 1-6 (int/float/str), "
        "'12'/'34'/'56' or 'I-II'/'III-IV'/'V-VI', and None/NaN/-1/'unknown' for unknown"
    )


def fitzpatrick_group(values):
    """Map Fitzpatrick skin types to the groups "I-II", "III-IV", "V-VI" (unknown -> None).

    Accepts I-VI, 1-6 (ints, floats such as 3.0, strings), the grouped DDI codes 12/34/56,
    already-grouped labels, and None/NaN/-1/"unknown" for unknown (Fitzpatrick17k uses -1).
    Anything else raises ValueError rather than becoming "unknown" unnoticed. A scalar gives a
    scalar; a pandas Series a Series with the same index; anything else a list.
    """
    if isinstance(values, pd.Series):
        return pd.Series([_fitzpatrick_one(v) for v in values], index=values.index,
                         name=values.name, dtype=object)
    if np.ndim(values) == 0:
        return _fitzpatrick_one(values)
    return [_fitzpatrick_one(v) for v in np.asarray(values, dtype=object).ravel()]


# --- Age ------------------------------------------------------------------------------------

DEFAULT_AGE_EDGES = (30, 50, 70)


def age_band_labels(edges=DEFAULT_AGE_EDGES) -> list[str]:
    """Labels for ``edges`` (30, 50, 70): ["<30", "30-49", "50-69", "70+"]."""
    edges = [int(e) for e in edges]
    labels = [f"<{edges[0]}"]
    labels += [f"{low}-{high - 1}" for low, high in zip(edges[:-1], edges[1:])]
    labels.append(f"{edges[-1]}+")
    return labels


def _age_one(value, edges, labels) -> str | None:
    if _is_missing(value):
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"unrecognised age {value!r}; expected a number of years or a missing value"
        ) from None
    if math.isnan(age) or age < 0:
        return None  # -1 and other negative codes mean unknown in several sources
    if age > 130:
        raise ValueError(f"age {value!r} is not plausible (years expected)")
    return labels[int(np.searchsorted(edges, age, side="right"))]


def age_band(values, *, edges=DEFAULT_AGE_EDGES):
    """Map ages in years to bands (default "<30", "30-49", "50-69", "70+"; unknown -> None).

    ``edges`` are the lower bounds of every band after the first (integers, increasing). Missing,
    NaN and negative ages (unknown codes) give None; non-numeric text raises ValueError. Same
    container rules as :func:`fitzpatrick_group`.
    """
    edge_list = [int(e) for e in edges]
    if not edge_list or any(b <= a for a, b in zip(edge_list[:-1], edge_list[1:])):
        raise ValueError(f"age edges must be increasing integers, got {edges!r}")
    labels = age_band_labels(edge_list)
    if isinstance(values, pd.Series):
        return pd.Series([_age_one(v, edge_list, labels) for v in values], index=values.index,
                         name=values.name, dtype=object)
    if np.ndim(values) == 0:
        return _age_one(values, edge_list, labels)
    return [_age_one(v, edge_list, labels) for v in np.asarray(values, dtype=object).ravel()]


def subgroup_label(column: str, value) -> str | None:
    """The subgroup a metadata value falls in, as subgroup tables and plots name it: a
    Fitzpatrick type as its group (``34`` -> ``III-IV``), an age as its band (``57`` -> ``50-69``),
    anything else as written; None for a missing value (and for a value the grouping cannot read,
    rather than raising: this labels images, it does not validate data)."""
    try:
        if column == "fitzpatrick":
            return fitzpatrick_group(value)
        if column == "age":
            return age_band(value)
    except ValueError:
        return None
    return None if _is_missing(value) else str(value)
