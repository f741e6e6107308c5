"""A source's label table applied to its rows: exact normalised lookup, premalignant policy.

A table maps each published diagnosis to ``benign``, ``malignant``, ``premalignant`` or
``exclude``; the premalignant policy (``paper``: what the study did for this dataset, or one rule
for all) decides what ``premalignant`` becomes.

Each source has named **label definitions** (chosen with ``prepare --labels``):

* ``complete`` (the default): the clinically complete binary task: every diagnosis of the dataset
  mapped by its table, premalignant lesions per the premalignant policy.
* ``study``: exactly what the MICCAI study evaluated (STUDY.md §4.0). For ISIC 2018 and HAM10000
  that is melanoma vs nevus only; every class the definition leaves out is excluded with its own
  reason code (:func:`study_exclusion_reason`), counted in the card, never dropped silently.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pandas as pd

from ... import BENIGN, MALIGNANT
from ...errors import SourceFormatError
from ..exclusions import Exclusion, exclusions_for

PREMALIGNANT_POLICIES = ("paper", "malignant", "benign", "exclude")
#: The named label definitions of ``prepare --labels``; the first is the default.
LABEL_DEFINITIONS = ("complete", "study")
DEFAULT_LABEL_DEFINITION = "complete"
#: Prefix of the reason code of a row the ``study`` definition leaves out (one code per class).
STUDY_EXCLUDED = "study_excluded"
#: Values a label table may map to.
TABLE_VALUES = (BENIGN, MALIGNANT, "premalignant", "exclude")


def normalise_key(value: Any) -> str:
    """Exact-match key: Unicode NFC, case-folded, trimmed, inner whitespace collapsed."""
    text = unicodedata.normalize("NFC", str(value))
    return " ".join(text.casefold().split())


def study_exclusion_reason(label_key: Any) -> str:
    """The reason code of a row whose class the ``study`` definition leaves out: one code per
    class, ``study_excluded_<class>`` (``BKL`` -> ``study_excluded_bkl``; ``pigmented benign
    keratosis`` -> ``study_excluded_pigmented_benign_keratosis``; accents dropped: ``queratose actínica``
    -> ``study_excluded_queratose_actinica``)."""
    ascii_key = unicodedata.normalize("NFKD", normalise_key(label_key)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^0-9a-z]+", "_", ascii_key).strip("_")
    return f"{STUDY_EXCLUDED}_{slug or 'unnamed'}"


def resolve_premalignant(table_value: str, policy: str, paper_default: str) -> str:
    """Turn a table value into benign/malignant/exclude under the premalignant policy."""
    if table_value != "premalignant":
        return table_value
    if policy == "paper":
        return paper_default
    return policy


def apply_label_table(
    frame: pd.DataFrame, table: dict[str, str], policy: str, paper_default: str, source: str,
    *, per_class_detail: str | None = None,
) -> tuple[pd.DataFrame, list[Exclusion], dict[str, str]]:
    """Label every row by exact normalised lookup of ``label_key``.

    An unknown value is an error listing every unknown value with its count: a published
    dataset's table is complete, and guessing (e.g. by substring) is how "melanose solar"
    became malignant in the study's hospital set.
    With ``per_class_detail`` (the ``study`` definition) each class the table excludes gets its
    own reason code (:func:`study_exclusion_reason`) with that detail, instead of one
    ``excluded_class`` record listing them all.
    Returns (labelled frame, exclusions, the mapping as applied: key -> final label).
    """
    if policy not in PREMALIGNANT_POLICIES:
        raise ValueError(f"premalignant policy {policy!r}; choose one of {', '.join(PREMALIGNANT_POLICIES)}")
    norm_table = {normalise_key(k): v for k, v in table.items()}
    bad_values = sorted({v for v in norm_table.values() if v not in TABLE_VALUES})
    if bad_values:
        raise ValueError(f"{source}: label table maps to {bad_values}; allowed: {', '.join(TABLE_VALUES)}")
    keys = frame["label_key"].map(lambda v: None if pd.isna(v) else normalise_key(v))
    unknown = keys[~keys.isin(list(norm_table)) & keys.notna()]
    if len(unknown):
        counts = unknown.value_counts()
        listing = ", ".join(f"{k!r} ({n})" for k, n in counts.items())
        raise SourceFormatError(
            f"{source}: {len(counts)} diagnosis value(s) are not in the label table: {listing}. "
            f"Add them to the mapping table (exact names; nothing is matched by substring).")
    applied = {k: resolve_premalignant(v, policy, paper_default) for k, v in norm_table.items()}
    table_value = keys.map(lambda k: None if k is None else norm_table[k])
    final = keys.map(lambda k: None if k is None else applied[k])
    excluded: list[Exclusion] = []
    missing = final.isna()
    if missing.any():
        excluded += exclusions_for(frame.loc[missing, "img_id"], "missing_diagnosis",
                                   "no value in the labelled column")
    premal = (final == "exclude") & (table_value == "premalignant")
    if premal.any():
        excluded += exclusions_for(frame.loc[premal, "img_id"], "premalignant_excluded",
                                   "premalignant policy 'exclude'")
    other = (final == "exclude") & (table_value == "exclude")
    if other.any() and per_class_detail is not None:
        for key in sorted(set(keys[other])):
            rows = other & (keys == key)
            excluded += exclusions_for(frame.loc[rows, "img_id"], study_exclusion_reason(key),
                                       f"{frame.loc[rows, 'label_key'].iloc[0]}: {per_class_detail}")
    elif other.any():
        classes = sorted(set(keys[other]))
        excluded += exclusions_for(frame.loc[other, "img_id"], "excluded_class",
                                   "classes the label table excludes: " + ", ".join(classes))
    keep = final.isin([BENIGN, MALIGNANT])
    out = frame.loc[keep].copy()
    out["benign_malignant"] = final[keep]
    return out, excluded, applied


def format_mapping(table: dict[str, str], applied: dict[str, str], counts: pd.Series | None = None,
                   kept: pd.Series | None = None) -> str:
    """The label mapping as a printable table (published value, table entry, final label, rows).

    ``counts`` are the metadata rows read per published value; ``kept`` (when given) the rows that
    reached the dataset, after rows without an image, subsampling and duplicates were dropped: a
    table of metadata rows alone overstates what was prepared (DDI: 267 rows read, 24 with an image).
    """
    rows = []
    width = max([len("published value")] + [len(k) for k in table]) + 2
    if kept is None:
        rows.append(f"  {'published value':<{width}}{'table':<14}{'label':<11}rows")
    else:
        rows.append(f"  {'published value':<{width}}{'table':<14}{'label':<11}{'rows read':>10}{'rows kept':>11}")
    for key, value in table.items():
        nk = normalise_key(key)
        n = int(counts.get(nk, 0)) if counts is not None else ""
        if kept is None:
            rows.append(f"  {key:<{width}}{value:<14}{applied.get(nk, value):<11}{n}")
        else:
            rows.append(f"  {key:<{width}}{value:<14}{applied.get(nk, value):<11}{n:>10}{int(kept.get(nk, 0)):>11}")
    return "\n".join(rows)
