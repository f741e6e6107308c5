"""DDI, Diverse Dermatology Images (Daneshjou et al. 2022): 656 biopsy-proven clinical images
balanced across Fitzpatrick skin tones.

Published as ``ddi_metadata.csv`` with header ``,DDI_ID,DDI_file,skin_tone,malignant,disease``
(first column an unnamed pandas index), ``skin_tone`` in {12, 34, 56}, ``malignant`` as
``True/False`` (``TRUE/FALSE`` and CRLF in spreadsheet re-saves) and one image folder. There are
no patient ids, so the split is image-level, stratified by label × skin tone (70/15/15).

``--labels study`` labels every image by its ``malignant`` column, as the study did; the study
evaluated a 371-image subset (316/28/27) whose selection is not published and cannot be derived,
so the ``study`` dataset has all 656 images (the card says so).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import SourceFormatError
from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, find_file, image_roots, parse_bool, read_published_csv

LABEL_TABLE = {"true": "malignant", "false": "benign"}


class DDI(Source):
    name = "ddi"
    title = "Diverse Dermatology Images (DDI)"
    licence = "Stanford DDI research use agreement"
    url = "https://ddi-dataset.github.io/"
    modality = "clinical"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = SplitSpec((0.70, 0.15, 0.15), group_by=(), stratify_by=("fitzpatrick",))
    LABEL_SOURCE = "malignant"
    STUDY_NOTE = ("all images, labelled by the malignant column as the study; the study evaluated a 371-image "
                  "subset (316/28/27) whose selection is not published and cannot be derived, so counts differ")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="metadata CSV (default: ddi_metadata.csv under --raw)")

    def read(self, raw: Path) -> SourceRows:
        path = find_file(raw, ["ddi_metadata.csv"], "DDI metadata", self.option("metadata"))
        df = read_published_csv(path)
        df = df.drop(columns=[c for c in df.columns if c == "" or c.startswith("Unnamed:")])
        check_columns(path, df.columns, ("DDI_file", "skin_tone", "malignant", "disease"), "DDI metadata",
                      allowed_extra=("DDI_ID",))
        try:
            malignant = df["malignant"].map(parse_bool)
        except ValueError as exc:
            raise SourceFormatError(f"{path}: column 'malignant' must be True/False: {exc}") from exc
        tones = sorted(set(df["skin_tone"].dropna()) - {"12", "34", "56"})
        if tones:
            raise SourceFormatError(f"{path}: skin_tone must be 12, 34 or 56 (Fitzpatrick I-II, III-IV, V-VI); "
                                    f"found {tones}")
        frame = df.rename(columns={"DDI_file": "img_id", "DDI_ID": "ddi_id", "skin_tone": "fitzpatrick",
                                   "disease": "diagnosis"})
        frame["label_key"] = malignant.map(lambda b: None if b is None else str(b).lower())
        frame = frame.drop(columns=["malignant"])
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)))
