"""A folder downloaded from the ISIC Archive with its official CLI (``isic-cli image download``)
or the website: ``metadata.csv`` (``isic_id, attribution, copyright_license, age_approx,
anatom_site_general, benign_malignant, diagnosis, diagnosis_1..5, diagnosis_confirm_type,
image_type, lesion_id, patient_id, sex, ...``) and ``ISIC_<id>.jpg`` images. This is how the study
got HAM10000 and ISIC 2018.

Field values are read with the Archive's own schema, the ``isic-metadata`` package: every value
of ``age_approx``, ``sex``, ``anatom_site_general``, ``diagnosis_confirm_type``, ``image_type``,
``fitzpatrick_skin_type``, ``clin_size_long_diam_mm`` and the ``diagnosis_1..5`` hierarchy is
validated by its ``MetadataRow`` (a value the schema does not know is refused, naming it), and
the legacy ``diagnosis`` column by its ``LegacyDxEnum``. Collection exports repeat every row two
or four times: identical repeats are dropped (and counted); an ``isic_id`` whose rows disagree is
excluded (``conflicting_isic_id_rows``).

Labels:

* ``--labels study``: ``benign_malignant`` exactly as the Archive sets it, which it does for
  melanocytic lesions only. A row without one is excluded per diagnosis
  (``study_excluded_<diagnosis>``); ``indeterminate``, ``indeterminate/benign`` and
  ``indeterminate/malignant`` per value (``study_excluded_indeterminate_benign`` ...).
* ``--labels complete``: the diagnosis: the ``diagnosis_1..5`` hierarchy where present (Benign ->
  benign, Malignant -> malignant, actinic keratosis / cheilitis -> premalignant, any other
  Indeterminate -> excluded), else the legacy ``diagnosis`` by :func:`legacy_labels`.

The Archive's own ``benign_malignant`` and ``diagnosis`` columns are kept as
``archive_benign_malignant`` and ``diagnosis_legacy``; ``diagnosis`` becomes the most specific
name. Split: a given split (``--split-column`` or ``--split-file``; rows it does not assign are
excluded as ``no_split``), else 70/15/15 grouped by patient and lesion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ... import BENIGN, MALIGNANT, SPLITS
from ...errors import SourceFormatError
from ..exclusions import Exclusion, exclusions_for
from ..splits import SplitSpec
from .base import Source, SourceRows
from .csv_source import SPLIT_ALIASES
from .labels import study_exclusion_reason
from .raw import ImageIndex, check_columns, find_file, image_roots, read_published_csv

DIAGNOSIS_LEVELS = tuple(f"diagnosis_{i}" for i in range(1, 6))
#: export column -> isic-metadata ``MetadataRow`` field, for the fields validated with the schema
#: (``age_approx``, ``sex`` and ``anatom_site_general`` are also normalised by it: ``85+`` -> 85, case)
SCHEMA_FIELDS = {"age_approx": "age", "sex": "sex", "anatom_site_general": "anatom_site_general",
                 "diagnosis_confirm_type": "diagnosis_confirm_type", "image_type": "image_type",
                 "fitzpatrick_skin_type": "fitzpatrick_skin_type",
                 "clin_size_long_diam_mm": "clin_size_long_diam_mm"}
#: the Archive's legacy ``benign_malignant`` values (the field predates the isic-metadata schema,
#: which no longer has it) -> the ``study`` table
STUDY_LABEL_TABLE = {"benign": BENIGN, "malignant": MALIGNANT, "indeterminate": "exclude",
                     "indeterminate/benign": "exclude", "indeterminate/malignant": "exclude"}
#: terminal names of the hierarchy's premalignant lesions (under Indeterminate epidermal proliferations)
PREMALIGNANT_TERMS = ("Solar or actinic keratosis", "Solar or actinic cheilitis")
#: image_type -> contract modality
MODALITIES = {"dermoscopic": "dermoscopic", "clinical": "clinical", "TBP tile": "tbp", "RCM": "rcm"}


NORMALISED_FIELDS = ("age", "sex", "anatom_site_general")


def legacy_labels() -> dict[str, str]:
    """The legacy ``diagnosis`` vocabulary (``isic_metadata.fields.LegacyDxEnum``) -> table value.
    Indeterminate or unspecific entities are excluded, actinic keratosis is premalignant (the
    legacy ``squamous cell carcinoma`` includes in-situ carcinoma: malignant)."""
    from isic_metadata.fields import LegacyDxEnum as Dx

    malignant = {Dx.basal_cell_carcinoma, Dx.melanoma, Dx.melanoma_metastasis, Dx.merkel_cell_carcinoma,
                 Dx.squamous_cell_carcinoma}
    excluded = {Dx.aimp, Dx.atypical_melanocytic_proliferation, Dx.atypical_spitz_tumor, Dx.adnexal_tumor, Dx.other}
    return {dx.value: (MALIGNANT if dx in malignant else "premalignant" if dx == Dx.actinic_keratosis
                       else "exclude" if dx in excluded else BENIGN) for dx in Dx}


def hierarchy_label(path: str) -> str:
    """Table value of a ``diagnosis_1..5`` path (``Benign:Benign melanocytic proliferations:Nevus``)."""
    levels = path.split(":")
    if levels[0] == "Benign":
        return BENIGN
    if levels[0] == "Malignant":
        return MALIGNANT
    if any(term in levels for term in PREMALIGNANT_TERMS):
        return "premalignant"
    return "exclude"  # Indeterminate (atypical melanocytic proliferations, Spitz tumours, ...)


class ISICArchive(Source):
    name = "isic-archive"
    title = "ISIC Archive download (isic-cli)"
    licence = "per image: CC-0 / CC-BY / CC-BY-NC (copyright_license column)"
    url = "https://www.isic-archive.com/"
    PAPER_PREMALIGNANT = MALIGNANT  # as HAM10000 / ISIC 2018 akiec
    SPLIT = SplitSpec((0.70, 0.15, 0.15), group_by=("patient_id", "lesion_id"))
    LABEL_SOURCE = "diagnosis_1..5 (ISIC diagnosis hierarchy), else the legacy diagnosis"
    STUDY_LABEL_TABLE = STUDY_LABEL_TABLE
    STUDY_LABEL_SOURCE = "benign_malignant as the ISIC Archive sets it (melanocytic lesions only)"
    STUDY_NOTE = ("the ISIC Archive's benign_malignant as the study used it: set for melanocytic lesions only, so "
                  "every row without it is excluded per diagnosis, and indeterminate values per value")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="the metadata CSV (default: metadata.csv under --raw, or the one "
                                               "*metadata*.csv there)")
        parser.add_argument("--split-column", help="a metadata column holding train/validation/test: use it as "
                                                   "the split")
        parser.add_argument("--split-file", help="a CSV with isic_id (or img_id) and split "
                                                 "(train/validation/test): use it as the split")

    def __init__(self, options=None):
        super().__init__(options)
        self._table: dict[str, str] = {}
        if self.option("split_column") and self.option("split_file"):
            raise SourceFormatError("--split-column and --split-file both name a split; give one")

    def given_split_policy(self) -> str:
        given = self.option("split_column") or self.option("split_file")
        return f"split as given by {'column ' if self.option('split_column') else ''}{given}"

    def label_table(self) -> dict[str, str]:
        """Under ``complete``: the diagnoses found (hierarchy paths and legacy names) -> table value."""
        if self.labels == "study":
            return dict(STUDY_LABEL_TABLE)
        return dict(sorted(self._table.items()))

    def read(self, raw: Path) -> SourceRows:
        path = self._metadata_path(raw)
        df = read_published_csv(path)
        required = ("isic_id", "benign_malignant") if self.labels == "study" else ("isic_id",)
        check_columns(path, df.columns, required, "ISIC Archive metadata")
        if self.labels != "study" and "diagnosis" not in df.columns and "diagnosis_1" not in df.columns:
            raise SourceFormatError(f"{path}: no diagnosis column (diagnosis_1..5 or the legacy diagnosis); "
                                    f"--labels complete labels by diagnosis. Found {list(df.columns)}")
        notes = [f"metadata file {path.name}"]
        df, excluded, note = _deduplicate(df)
        notes += [note] if note else []
        frame = _validated(df, path)
        frame = self._labelled(frame, path, excluded)
        frame, split_excluded, split_note = self._given_split(frame, raw)
        excluded += split_excluded
        notes += [split_note] if split_note else []
        return SourceRows(frame=frame, excluded=excluded, notes=notes,
                          image_index=ImageIndex(image_roots(raw, self.options)))

    def _metadata_path(self, raw: Path) -> Path:
        if self.option("metadata") or raw.is_file():
            return find_file(raw, [], "ISIC Archive metadata", self.option("metadata"))
        if (raw / "metadata.csv").is_file():
            return raw / "metadata.csv"
        found = sorted(raw.glob("*metadata*.csv"))
        if len(found) == 1:
            return found[0]
        raise SourceFormatError(f"ISIC Archive: {'no' if not found else len(found)} metadata CSV(s) directly under "
                                f"{raw} ({', '.join(p.name for p in found)}); an isic-cli download has metadata.csv, "
                                f"a collection export <collection>_metadata_<date>.csv: name it with --metadata")

    def _labelled(self, frame: pd.DataFrame, path: Path, excluded: list[Exclusion]) -> pd.DataFrame:
        """``label_key`` per row, and ``diagnosis`` = the most specific name."""
        hierarchy = frame["diagnosis_path"]
        legacy = frame["diagnosis_legacy"] if "diagnosis_legacy" in frame.columns else pd.Series(None, frame.index)
        frame["diagnosis"] = hierarchy.map(lambda p: None if p is None else p.split(":")[-1]).where(
            hierarchy.notna(), legacy)
        if self.labels == "study":
            bm = frame["archive_benign_malignant"]
            unset = bm.isna()
            for name in sorted(set(frame.loc[unset, "diagnosis"].fillna("no diagnosis"))):
                rows = unset & (frame["diagnosis"].fillna("no diagnosis") == name)
                excluded += exclusions_for(frame.loc[rows, "img_id"], study_exclusion_reason(name),
                                           f"{name}: no benign_malignant (the ISIC Archive sets it for melanocytic "
                                           f"lesions only), outside the study's label definition")
            frame = frame.loc[~unset].copy()
            frame["label_key"] = frame["archive_benign_malignant"]
            return frame.drop(columns=["diagnosis_path"])
        legacy_table = legacy_labels()
        use_legacy = hierarchy.isna() & legacy.notna()
        unknown = legacy[use_legacy & ~legacy.isin(list(legacy_table))]
        if len(unknown):
            listing = ", ".join(f"{v!r} ({n})" for v, n in unknown.value_counts().items())
            raise SourceFormatError(f"{path}: legacy diagnosis value(s) the ISIC Archive schema (isic-metadata "
                                    f"{_schema_version()}) does not know: {listing}")
        frame["label_key"] = hierarchy.where(hierarchy.notna(), legacy.where(use_legacy))
        self._table = {key: hierarchy_label(key) for key in hierarchy.dropna().unique()}
        self._table.update({key: legacy_table[key] for key in legacy[use_legacy].unique()})
        return frame.drop(columns=["diagnosis_path"])

    def _given_split(self, frame: pd.DataFrame, raw: Path) -> tuple[pd.DataFrame, list[Exclusion], str]:
        """The split named by ``--split-column`` / ``--split-file``; rows it does not assign are excluded."""
        column, file = self.option("split_column"), self.option("split_file")
        if not column and not file:
            return frame, [], ""
        if column:
            if column not in frame.columns:
                raise SourceFormatError(f"--split-column {column!r} is not a column of the metadata "
                                        f"({', '.join(frame.columns)})")
            values, what = frame[column], f"column {column!r}"
        else:
            split_path = find_file(raw, [], "--split-file", file)
            given = read_published_csv(split_path)
            key = next((c for c in ("isic_id", "img_id") if c in given.columns), None)
            if key is None or "split" not in given.columns:
                raise SourceFormatError(f"--split-file {split_path}: needs columns isic_id (or img_id) and split; "
                                        f"found {list(given.columns)}")
            values, what = frame["img_id"].map(given.drop_duplicates(key).set_index(key)["split"]), split_path.name
        split = values.map(lambda s: None if s is None or pd.isna(s) else SPLIT_ALIASES.get(str(s).strip().lower(),
                                                                                             "?"))
        bad = sorted(set(values[split == "?"].astype(str)))
        if bad:
            raise SourceFormatError(f"split {what}: values {bad}; use {', '.join(SPLITS)}")
        missing = split.isna()
        excluded = exclusions_for(frame.loc[missing, "img_id"], "no_split", f"no split in {what}")
        out = frame.loc[~missing].copy()
        out["split"] = split[~missing]
        return out, excluded, f"split as given by {what}"


#: what an Archive export adds to the images of another source (ISIC 2018, HAM10000)
ARCHIVE_FIELDS = ("lesion_id", "patient_id", "age", "sex", "site")


def archive_fields(path: Path) -> tuple[pd.DataFrame, str]:
    """``img_id`` (= ``isic_id``) with the lesion/patient ids and age, sex and site of an ISIC
    Archive export, validated like the source's own; and a note saying what it supplied.
    ``--archive-metadata`` of ``isic2018`` and ``ham10000`` fill these in for their images."""
    if not path.is_file():
        raise SourceFormatError(f"--archive-metadata {path} does not exist")
    df = read_published_csv(path)
    check_columns(path, df.columns, ("isic_id",), "ISIC Archive metadata")
    df, conflicts, _ = _deduplicate(df)
    frame = _validated(df, path)
    columns = [c for c in ARCHIVE_FIELDS if c in frame.columns]
    note = (f"{', '.join(columns) or 'nothing'} from the ISIC Archive export {path.name} ({len(frame)} images"
            + (f"; {len(conflicts)} isic_id(s) with disagreeing rows not used" if conflicts else "") + ")")
    return frame[["img_id", *columns]], note


def _schema_version() -> str:
    import isic_metadata

    return getattr(isic_metadata, "__version__", "?")


def _deduplicate(df: pd.DataFrame) -> tuple[pd.DataFrame, list[Exclusion], str]:
    """One row per ``isic_id``: identical repeats (collection exports) dropped and counted; an id
    whose rows disagree is excluded, naming the columns that differ."""
    if df["isic_id"].isna().any():
        raise SourceFormatError(f"ISIC Archive metadata: {int(df['isic_id'].isna().sum())} row(s) without an isic_id")
    exact = df.duplicated(keep="first")
    n_repeats = int(exact.sum())
    df = df.loc[~exact]
    clash = df["isic_id"].duplicated(keep=False)
    excluded = []
    for isic_id, rows in df.loc[clash].groupby("isic_id", sort=True):
        differ = [c for c in rows.columns if rows[c].nunique(dropna=False) > 1]
        excluded.append(Exclusion(split="", img_id=str(isic_id), reason="conflicting_isic_id_rows",
                                  detail=f"{len(rows)} rows of this isic_id differ in {', '.join(differ)}"))
    note = (f"{n_repeats} repeated row(s) dropped (collection exports list every image more than once; "
            f"identical rows, one kept per isic_id)") if n_repeats else ""
    return df.loc[~clash], excluded, note


def _validated(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The export's rows with contract names, every schema field checked and normalised by
    ``isic_metadata.metadata.MetadataRow`` (values are validated once per distinct value)."""
    from isic_metadata.metadata import MetadataRow
    from pydantic import ValidationError

    frame = df.rename(columns={"isic_id": "img_id", "benign_malignant": "archive_benign_malignant",
                               "diagnosis": "diagnosis_legacy"}).copy()
    problems: list[str] = []

    def check(field: str, value: Any) -> Any:
        try:
            return MetadataRow(**{field: value})
        except ValidationError as exc:
            message = "; ".join(e["msg"] for e in exc.errors())
            problems.append(f"{field} {value!r} ({message})")
            return None

    for column, field in SCHEMA_FIELDS.items():
        if column not in frame.columns:
            continue
        normalised = {}
        for value in frame[column].dropna().unique():
            row = check(field, value)
            if row is not None and field in NORMALISED_FIELDS:
                v = getattr(row, field)
                normalised[value] = None if v is None else str(getattr(v, "value", v))
        if field in NORMALISED_FIELDS:
            frame[column] = frame[column].map(lambda v: None if v is None else normalised.get(v))
    levels = [c for c in DIAGNOSIS_LEVELS if c in frame.columns]
    paths = frame[levels].apply(lambda r: ":".join(v for v in r if isinstance(v, str)) or None, axis=1) \
        if levels else pd.Series(None, index=frame.index, dtype=object)
    for value in paths.dropna().unique():
        row = check("diagnosis", value)
        if row is not None and ":".join(v for v in (row.diagnosis_1, row.diagnosis_2, row.diagnosis_3,
                                                    row.diagnosis_4, row.diagnosis_5) if v) != value:
            problems.append(f"diagnosis_1..5 {value!r} (not a path of the diagnosis hierarchy)")
    if problems:
        raise SourceFormatError(f"{path}: value(s) the ISIC Archive schema (isic-metadata {_schema_version()}) does "
                                f"not accept: {'; '.join(problems[:10])}"
                                + (f" and {len(problems) - 10} more" if len(problems) > 10 else "")
                                + ". Is this an ISIC Archive export as written? (A newer schema: pip install -U "
                                  "isic-metadata)")
    frame["diagnosis_path"] = paths.astype(object).where(paths.notna(), None)
    frame = frame.rename(columns={"age_approx": "age", "anatom_site_general": "site",
                                  "fitzpatrick_skin_type": "fitzpatrick"})
    if "image_type" in frame.columns:
        frame["modality"] = frame["image_type"].map(
            lambda t: None if t is None else MODALITIES.get(str(t).split(":")[0], str(t)))
    return frame
