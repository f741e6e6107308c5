"""A private dataset (e.g. the study's hospital set): a CSV, an image folder and a YAML mapping.

The mapping table assigns every diagnosis string a label by **exact** match after Unicode and
whitespace normalisation and case folding. Unmapped diagnoses are listed and refused — never
guessed: the study's substring matching turned "melanose solar" and "nevo melanocítico"
malignant because they contain "melano". Mapping file::

    columns:            # optional: contract name <- your column name
      img_id: filename
      diagnosis: diagnostico
      patient_id: paciente
    labels:             # every diagnosis that occurs, exactly
      melanoma: malignant
      nevo melanocítico: benign
      melanose solar: benign
      queratose actínica: premalignant   # follows --premalignant
      cicatriz: exclude
    premalignant_paper: malignant        # optional: what 'paper' means for this set
    licence: private
    ratios: [0.7, 0.15, 0.15]            # optional
    modality: clinical                   # optional

A ``split`` column (train/validation/test) in the CSV is used as an official split.

``--labels study`` needs a second table, ``study_labels:``, with the labels the study gave each
diagnosis, written out exactly (for the study's hospital set: what its keyword matching produced,
"melanose solar" malignant included; STUDY.md §4.7). dermbench never derives them by substring:
the table is yours, and the card records that the ``study`` labels came from it.
"""

from __future__ import annotations

from pathlib import Path

from ... import SPLITS
from ...errors import SourceFormatError
from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import ImageIndex, clean_number, find_file, image_roots, read_published_csv

CONTRACT_NAMES = ("img_id", "diagnosis", "patient_id", "lesion_id", "fitzpatrick", "age", "sex", "site", "modality",
                  "split")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "test": "test", "testing": "test"}


def load_mapping(path: Path) -> dict:
    import yaml

    from ...utils.yamlio import load_yaml

    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SourceFormatError(f"mapping file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict) or not data["labels"]:
        raise SourceFormatError(f"mapping file {path}: needs a 'labels:' table (diagnosis: benign|malignant|"
                                f"premalignant|exclude)")
    unknown_keys = sorted(set(data) - {"columns", "labels", "study_labels", "premalignant_paper", "licence", "ratios",
                                       "modality", "name", "url"})
    if unknown_keys:
        raise SourceFormatError(f"mapping file {path}: unknown key(s) {unknown_keys}")
    if "study_labels" in data and (not isinstance(data["study_labels"], dict) or not data["study_labels"]):
        raise SourceFormatError(f"mapping file {path}: 'study_labels:' must be a table diagnosis: benign|malignant|"
                                f"exclude (the labels the study gave each diagnosis)")
    for key in ("labels", "study_labels"):
        if key in data:
            data[key] = {str(k): str(v).strip().lower() for k, v in data[key].items()}
    return data


def sniff_separator(path: Path) -> str:
    """``,`` unless the header line has more ``;`` or tabs: spreadsheets in locales with a decimal
    comma (the study's hospital set is Brazilian) export semicolon-separated "CSV"."""
    with open(path, "rb") as fh:
        header = fh.readline().decode("latin-1")
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > counts[","] else ","


class CSVSource(Source):
    name = "csv"
    title = "CSV + mapping table"
    licence = "as declared in the mapping file"
    LABEL_SOURCE = "diagnosis (exact, normalised match)"
    SPLIT = SplitSpec((0.70, 0.15, 0.15), group_by=("patient_id", "lesion_id"))
    NO_STUDY_LABELS = ("its mapping file has no 'study_labels:' table. The study labelled its private hospital set "
                       "by substring matching, which dermbench does not reproduce (STUDY.md §8.2); to prepare the "
                       "study's labels, write them out exactly under 'study_labels:' in the mapping, or use "
                       "--labels complete")
    STUDY_NOTE = "the study's labels as written in the mapping file's study_labels table"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="the CSV (default: the only .csv directly under --raw)")
        parser.add_argument("--mapping", help="YAML mapping table (required for the csv source)")

    def __init__(self, options=None):
        super().__init__(options)
        mapping = self.option("mapping")
        if not mapping:
            raise SourceFormatError("the csv source needs --mapping MAPPING.yaml: a table diagnosis -> "
                                    "benign/malignant/premalignant/exclude (see `dermbench prepare csv --help`)")
        self.mapping = load_mapping(Path(mapping).expanduser())
        self.LABEL_TABLE = self.mapping["labels"]
        if "study_labels" in self.mapping:
            self.STUDY_LABEL_TABLE = self.mapping["study_labels"]
            self.NO_STUDY_LABELS = ""
        self.PAPER_PREMALIGNANT = str(self.mapping.get("premalignant_paper", "malignant"))
        self.licence = str(self.mapping.get("licence", "private"))
        self.modality = self.mapping.get("modality")
        if self.mapping.get("ratios"):
            self.SPLIT = SplitSpec(tuple(float(r) for r in self.mapping["ratios"]), self.SPLIT.group_by)

    def read(self, raw: Path) -> SourceRows:
        if self.option("metadata"):
            path = find_file(raw, [], "CSV metadata", self.option("metadata"))
        elif raw.is_file():
            path = raw
        else:
            csvs = sorted(raw.glob("*.csv"))
            if len(csvs) != 1:
                raise SourceFormatError(f"csv source: found {len(csvs)} .csv files directly under {raw}; "
                                        f"name one with --metadata")
            path = csvs[0]
        df = read_published_csv(path, sep=sniff_separator(path))
        renames = {str(v): str(k) for k, v in (self.mapping.get("columns") or {}).items()}
        bad = [k for k in renames.values() if k not in CONTRACT_NAMES]
        if bad:
            raise SourceFormatError(f"mapping columns: {bad} are not contract names ({', '.join(CONTRACT_NAMES)})")
        missing = [c for c in renames if c not in df.columns]
        if missing:
            raise SourceFormatError(f"{path}: mapping names column(s) {missing} that the CSV lacks; it has {list(df.columns)}")
        frame = df.rename(columns=renames)
        for col in ("img_id", "diagnosis"):
            if col not in frame.columns:
                raise SourceFormatError(f"{path}: no {col!r} column; map yours under 'columns:' in the mapping file")
        frame["label_key"] = frame["diagnosis"]
        if "age" in frame:
            frame["age"] = frame["age"].map(clean_number)
        if "split" in frame.columns:
            norm = frame["split"].map(lambda s: None if s is None else SPLIT_ALIASES.get(str(s).strip().lower()))
            if norm.isna().any():
                bad = sorted(set(frame.loc[norm.isna(), "split"].astype(str)))
                raise SourceFormatError(f"{path}: split values {bad}; use {', '.join(SPLITS)}")
            frame["split"] = norm
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)),
                          notes=[f"metadata {path.name}, mapping {self.option('mapping')}"])
