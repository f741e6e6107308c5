"""Fitzpatrick17k (Groh et al. 2021): 16,577 clinical atlas images with Fitzpatrick skin type.

Published as ``fitzpatrick17k.csv`` (``md5hash, fitzpatrick_scale, fitzpatrick_centaur, label,
nine_partition_label, three_partition_label, qc, url, url_alphanum``; ``fitzpatrick_scale`` −1 =
unknown). Images are not redistributed: users download them from ``url`` and name them
``<md5hash>.jpg``; rows whose image is absent are excluded and reported. The binary label is
``three_partition_label`` (malignant / benign); non-neoplastic rows are excluded and counted.
Split 70/15/15 stratified by label × Fitzpatrick type (no patient ids).
"""

from __future__ import annotations

from pathlib import Path

from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, clean_number, clean_text, find_file, image_roots, read_published_csv

LABEL_TABLE = {"malignant": "malignant", "benign": "benign", "non-neoplastic": "exclude"}


class Fitzpatrick17k(Source):
    name = "fitzpatrick17k"
    title = "Fitzpatrick17k"
    licence = "CC BY-NC-SA 3.0"
    url = "https://github.com/mattgroh/fitzpatrick17k"
    modality = "clinical"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = SplitSpec((0.70, 0.15, 0.15), group_by=(), stratify_by=("fitzpatrick",))
    LABEL_SOURCE = "three_partition_label"
    NO_STUDY_LABELS = "the study did not evaluate Fitzpatrick17k; use --labels complete"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="annotation CSV (default: fitzpatrick17k.csv under --raw)")

    def read(self, raw: Path) -> SourceRows:
        path = find_file(raw, ["fitzpatrick17k.csv"], "Fitzpatrick17k annotations", self.option("metadata"))
        df = read_published_csv(path)
        check_columns(path, df.columns, ("md5hash", "fitzpatrick_scale", "label", "three_partition_label"),
                      "Fitzpatrick17k annotation")
        frame = df.rename(columns={"label": "diagnosis", "fitzpatrick_scale": "fitzpatrick"})
        frame["image_lookup"] = frame["md5hash"]
        frame["img_id"] = frame["md5hash"]
        frame["label_key"] = frame["three_partition_label"]
        frame["fitzpatrick"] = frame["fitzpatrick"].map(clean_number)
        frame["diagnosis"] = frame["diagnosis"].map(clean_text)
        keep = ["img_id", "image_lookup", "label_key", "diagnosis", "fitzpatrick", "nine_partition_label",
                "three_partition_label", "fitzpatrick_centaur", "qc", "url"]
        frame = frame[[c for c in keep if c in frame.columns]]
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)))
