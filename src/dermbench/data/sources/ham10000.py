"""HAM10000 (Tschandl et al. 2018): 10,015 dermoscopic images of 7,470 lesions.

Published as ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,localization``;
the Kaggle/ISIC copy has LF and float ages, the Harvard Dataverse copy an extra ``dataset`` column,
integer ages, CRLF and no final newline) plus ``HAM10000_images_part_1/2``. There is no official
split, and up to six images show the same lesion, so the split is grouped by ``lesion_id``
(75/12.5/12.5 as in the study).

Under ``--labels study`` the dataset is what the study called HAM10000 (STUDY.md §4.0): the
11,720 images of ISIC 2018 task 3 (training 10,015 = HAM10000, validation 193, test 1,512),
pooled from whichever ``ISIC2018_Task3_*_GroundTruth.csv`` files are under ``--raw`` (the
training part may instead come from ``HAM10000_metadata.csv``: the same images), melanoma vs
nevus only (other classes excluded per class, as for ``isic2018 --labels study``), re-split
75/12.5/12.5: grouped by ``lesion_id`` where one is known (``HAM10000_metadata.csv``, the ISIC
2018 lesion groupings, or ISIC Archive exports given with ``--archive-metadata``), images without one
on their own; ``--split ungrouped`` gives the study's image-level split. A missing part is a
warning naming the file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import SourceFormatError
from ...utils.console import get_logger
from ..splits import SplitSpec
from .base import Source, SourceRows
from .isic2018 import (GROUND_TRUTH, STUDY_NOTE, add_archive_metadata_argument, read_ground_truth,
                       with_archive_metadata)
from .raw import (ImageIndex, check_columns, clean_number, clean_text, fill_from, find_file, image_roots,
                  read_published_csv)

_log = get_logger("prepare")
METADATA_NAMES = ["HAM10000_metadata.csv", "HAM10000_metadata", "HAM10000_metadata.tab"]
#: The study's pool: ISIC 2018 task 3 training + validation + test.
STUDY_POOL_SIZE = {"train": 10015, "validation": 193, "test": 1512}

HAM_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")

#: dx -> label. ``akiec`` mixes actinic keratosis (premalignant) with Bowen's disease
#: (intraepithelial carcinoma); the study counted it malignant, so it follows the premalignant policy.
LABEL_TABLE = {
    "mel": "malignant",   # melanoma
    "bcc": "malignant",   # basal cell carcinoma
    "akiec": "premalignant",  # actinic keratosis + Bowen's disease
    "nv": "benign",       # melanocytic nevus
    "bkl": "benign",      # benign keratosis-like lesion
    "df": "benign",       # dermatofibroma
    "vasc": "benign",     # vascular lesion
}
#: ``--labels study``: melanoma vs nevus (the ISIC Archive's benign_malignant); the rest excluded.
STUDY_LABEL_TABLE = {dx: {"mel": "malignant", "nv": "benign"}.get(dx, "exclude") for dx in LABEL_TABLE}


class HAM10000(Source):
    name = "ham10000"
    title = "HAM10000"
    licence = "CC BY-NC 4.0"
    url = "https://doi.org/10.7910/DVN/DBW86T"
    modality = "dermoscopic"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = SplitSpec((0.75, 0.125, 0.125), group_by=("lesion_id",))
    LABEL_SOURCE = "dx"
    STUDY_LABEL_TABLE = STUDY_LABEL_TABLE
    STUDY_LABEL_SOURCE = "ISIC 2018 task 3 class (dx): melanoma vs nevus (the ISIC Archive's benign_malignant)"
    STUDY_NOTE = ("the study's HAM10000: the ISIC 2018 task 3 pool (training 10,015 + validation 193 + test 1,512 = "
                  "11,720) re-split 75/12.5/12.5; " + STUDY_NOTE)

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="metadata CSV (default: HAM10000_metadata.csv under --raw)")
        add_archive_metadata_argument(parser)  # under study: the lesion ids of the validation/test images

    def read(self, raw: Path) -> SourceRows:
        if self.labels == "study":
            return self._read_study_pool(raw)
        path = find_file(raw, METADATA_NAMES, "HAM10000 metadata", self.option("metadata"))
        frame = _read_metadata(path)
        frame["label_key"] = frame["diagnosis"]
        frame, added = with_archive_metadata(frame, self.option("archive_metadata", []))
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)),
                          notes=[f"metadata file {path.name}", *added])

    def _read_study_pool(self, raw: Path) -> SourceRows:
        """The ISIC 2018 task 3 pool, its part of origin in ``isic2018_split`` (not used as the split)."""
        frame, notes, missing = read_ground_truth(raw)
        metadata = self._metadata_if_present(raw)
        if metadata is not None:
            path, ham = metadata
            if "train" in missing:
                part = ham[["img_id", "diagnosis"]].assign(label_key=ham["diagnosis"], split="train")
                frame = pd.concat([frame, part], ignore_index=True)
                notes.append(f"training part from {path.name} (HAM10000 = the ISIC 2018 task 3 training images)")
                del missing["train"]
            extra = [c for c in ("lesion_id", "dx_type", "age", "sex", "site", "dataset") if c in ham.columns]
            frame = fill_from(frame, ham[["img_id", *extra]])
        if not len(frame):
            raise SourceFormatError(f"HAM10000 --labels study: none of {', '.join(GROUND_TRUTH.values())} or "
                                    f"HAM10000_metadata.csv under {raw}; the study's pool is the ISIC 2018 task 3 "
                                    f"ground truth")
        for split, name in missing.items():
            message = (f"the study's HAM10000 pool lacks the ISIC 2018 {split} part ({STUDY_POOL_SIZE[split]:,} "
                       f"images): {name} not found under {raw}")
            _log.warning(message)
            notes.append("warning: " + message)
        frame, added = with_archive_metadata(frame, self.option("archive_metadata", []))
        notes += added
        if "lesion_id" not in frame.columns:
            frame["lesion_id"] = None
        n_without = int(frame["lesion_id"].isna().sum())
        if n_without:
            notes.append(f"{n_without} pool image(s) have no lesion id (each is its own group in the split); "
                         f"ISIC Archive exports given with --archive-metadata supply them")
        frame = frame.rename(columns={"split": "isic2018_split"})
        return SourceRows(frame=frame, notes=notes, image_index=ImageIndex(image_roots(raw, self.options)))

    def _metadata_if_present(self, raw: Path) -> tuple[Path, pd.DataFrame] | None:
        explicit = self.option("metadata")
        try:
            path = find_file(raw, METADATA_NAMES, "HAM10000 metadata", explicit)
        except SourceFormatError:
            if explicit:
                raise
            return None
        return path, _read_metadata(path)


def _read_metadata(path: Path) -> pd.DataFrame:
    df = read_published_csv(path)
    check_columns(path, df.columns, HAM_COLUMNS, "HAM10000 metadata", allowed_extra=("dataset",))
    frame = df.rename(columns={"image_id": "img_id", "dx": "diagnosis", "localization": "site"})
    frame["age"] = frame["age"].map(clean_number)
    frame["sex"] = frame["sex"].map(clean_text)
    frame["site"] = frame["site"].map(clean_text)
    return frame

