"""The MICCAI 2026 study's VLM protocol where it differs from dermbench's: the patient-metadata
block that fills an empty user prompt, and the study's answer parser.

**Metadata blocks** (STUDY.md §6.3). The study wrote the block in its code, not in its prompt
files, so a user holding the study's ``vlm_prompt_patient_info.yaml`` (whose ``user_prompt`` is
empty) needs the block from here. dermbench reproduces it character for character, quirks
included, because that text is what the model read:

* the block starts with a newline and every line is indented by 16 spaces (the study's code wrote
  it as an indented triple-quoted string), and it ends with a newline and 16 spaces;
* ISIC 2024 appends ``"\\n- Lesion diameter: ..."`` after that trailing indentation, unindented;
* values are printed as Python prints the cell pandas read from the split CSV: ``55.0`` in a
  numeric column with a missing value, ``nan`` for a missing value, ``False`` for a boolean, and
  ``None`` for a column the CSV lacks. :func:`study_rows` rebuilds those cells from dermbench's
  string-typed split frame by the same pandas type inference (a CSV round trip).

Which block a dataset gets is chosen from its card's ``source`` (:data:`BLOCK_BY_SOURCE`), not,
as in the study, from a substring of its folder path ("isic" / "pad"); HAM10000, DDI, SD-198 and
merged datasets get none, as in the study's newer configuration. The zeroshot setting
``metadata_block`` overrides the choice.

Columns: the study read the published column names (``gender``, ``region``, ``age_approx``,
``anatom_site_general``); dermbench's sources rename some (``sex``, ``site``, ``age``), so each
field lists the names it is read from, the study's first.

**Parser** (STUDY.md §6.6, the newer version 102b2c3d): keep letters and spaces, lower-case, then
``malignant`` and ``benign`` as substrings: both or neither -> ``error``, else the one present.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from ...errors import PromptSetError

INDENT = " " * 16
METADATA_BLOCKS = ("auto", "isic", "isic2024", "pad", "none")
#: dataset.json ``source`` -> block (any other source: none)
BLOCK_BY_SOURCE = {"isic2018": "isic", "isic-archive": "isic", "isic2024": "isic2024", "pad-ufes-20": "pad"}


@dataclass(frozen=True)
class Field:
    label: str
    columns: tuple[str, ...]  # read from the first one the frame has


def _f(label: str, *columns: str) -> Field:
    return Field(label, columns)


ISIC_FIELDS = (_f("Approximate age", "age_approx", "age"), _f("Sex", "sex"),
               _f("Lesion location", "anatom_site_general", "site"))
ISIC2024_DIAMETER = _f("Lesion diameter", "clin_size_long_diam_mm")
PAD_SECTIONS: tuple[tuple[str, tuple[Field, ...]], ...] = (
    ("Demographics", (_f("Age", "age"), _f("Sex", "gender", "sex"), _f("Lesion Location", "region", "site"))),
    ("Lifestyle & Exposure", (_f("Smoke", "smoke"), _f("Drink", "drink"), _f("Pesticide Exposure", "pesticide"))),
    ("Symptoms Reported", (_f("Itching", "itch"), _f("Growth", "grew"), _f("Pain", "hurt"),
                           _f("Changes in shape/color", "changed"), _f("Bleeding", "bleed"),
                           _f("Elevation", "elevation"))),
    ("Living Conditions", (_f("Piped Water", "has_piped_water"), _f("Sewage System", "has_sewage_system"))),
    ("Medical History", (_f("Skin Cancer History", "skin_cancer_history"),
                         _f("Other Cancer History", "cancer_history"))),
    ("Family Background", (_f("Father's origin", "background_father"), _f("Mother's origin", "background_mother"))),
)


def block_fields(block: str) -> tuple[Field, ...]:
    if block == "isic":
        return ISIC_FIELDS
    if block == "isic2024":
        return ISIC_FIELDS + (ISIC2024_DIAMETER,)
    if block == "pad":
        return tuple(f for _, fields in PAD_SECTIONS for f in fields)
    return ()


def choose_block(card: Mapping[str, Any], setting: str = "auto") -> str:
    """The block of a dataset: the setting when not ``auto``, else by the card's ``source``."""
    if setting not in METADATA_BLOCKS:
        raise PromptSetError(f"metadata_block must be one of {', '.join(METADATA_BLOCKS)}, got {setting!r}")
    if setting != "auto":
        return setting
    return BLOCK_BY_SOURCE.get(str(card.get("source") or ""), "none")


def _value(row: Mapping[str, Any], field: Field) -> str:
    """The cell as the study's f-string printed it (``None`` when no column is there)."""
    for column in field.columns:
        if column in row:
            return f"{row[column]}"
    return "None"


def render_block(block: str, row: Mapping[str, Any]) -> str:
    """The study's metadata text for one row (``""`` for ``none``); see the module docstring."""
    if block == "none":
        return ""
    if block in ("isic", "isic2024"):
        lines = ["Patient and image metadata:", ""] + [f"- {f.label}: {_value(row, f)}" for f in ISIC_FIELDS]
        text = "\n" + "".join(f"{INDENT}{line}\n" if line else "\n" for line in lines) + INDENT
        if block == "isic2024":
            text += f"\n- {ISIC2024_DIAMETER.label}: {_value(row, ISIC2024_DIAMETER)}"
        return text
    if block == "pad":
        lines = ["Patient Medical Record"]
        for title, fields in PAD_SECTIONS:
            lines += ["", f"\u2500\u2500 {title} \u2500\u2500"] + [f"\u2022 {f.label}: {_value(row, f)}" for f in fields]
        return "\n" + "".join(f"{INDENT}{line}\n" if line else "\n" for line in lines) + INDENT
    raise PromptSetError(f"unknown metadata block {block!r}; use one of {', '.join(METADATA_BLOCKS[1:])}")


def missing_columns(block: str, columns: list[str] | set[str]) -> list[Field]:
    """The block's fields the dataset has no column for (they would print ``None``)."""
    have = set(columns)
    return [f for f in block_fields(block) if not have.intersection(f.columns)]


def study_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The split's rows typed as pandas reads a CSV with default inference (as the study read its
    ``test_metadata.csv``): integers, floats (``55.0`` once a column has a gap), booleans, NaN."""
    if frame.empty:
        return []
    typed = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    return typed.to_dict("records")


def study_parse(answer: str | None) -> str:
    """The study's answer parser (newer version): ``benign``, ``malignant`` or ``error``."""
    text = re.sub(r"[^a-zA-Z ]+", "", str(answer or "")).strip().lower()
    malignant, benign = "malignant" in text, "benign" in text
    if malignant == benign:
        return "error"
    return "malignant" if malignant else "benign"
