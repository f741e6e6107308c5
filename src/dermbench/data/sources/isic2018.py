"""ISIC 2018 challenge task 3 (lesion diagnosis): HAM10000 training images plus new validation
and test images, with the **official** train/validation/test split (10,015 / 193 / 1,512).

Published as ``ISIC2018_Task3_{Training,Validation,Test}_GroundTruth.csv`` (``image`` + one-hot
float columns ``MEL,NV,BCC,AKIEC,BKL,DF,VASC``) and ``..._Input`` image folders; optionally
``ISIC2018_Task3_Training_LesionGroupings.csv`` (``image,lesion_id,diagnosis_confirm_type``).
Splits whose ground-truth file is absent stay empty (and are reported).

``--archive-metadata`` adds lesion ids, age, sex and site from ISIC Archive exports of the same
images (the challenge files have none; the study's ISIC 2018 set was such an export).

Under ``--labels study`` the task is melanoma vs nevus, as the study evaluated it (STUDY.md §4.0):
its labels were the ISIC Archive's ``benign_malignant``, which the Archive sets only for
melanocytic lesions (MEL malignant, NV benign). The other five classes are excluded, each with its
own reason code (``study_excluded_bkl``, ...): on the official test set that leaves exactly the
study's 909 benign / 171 malignant images.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import SourceFormatError
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, fill_from, image_roots, read_published_csv

CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
GROUND_TRUTH = {
    "train": "ISIC2018_Task3_Training_GroundTruth.csv",
    "validation": "ISIC2018_Task3_Validation_GroundTruth.csv",
    "test": "ISIC2018_Task3_Test_GroundTruth.csv",
}
GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"

LABEL_TABLE = {
    "MEL": "malignant",
    "BCC": "malignant",
    "AKIEC": "premalignant",  # actinic keratosis + Bowen's disease, as in HAM10000
    "NV": "benign",
    "BKL": "benign",
    "DF": "benign",
    "VASC": "benign",
}
#: ``--labels study``: melanoma vs nevus, the classes the ISIC Archive gives a ``benign_malignant``.
STUDY_LABEL_TABLE = {cls: {"MEL": "malignant", "NV": "benign"}.get(cls, "exclude") for cls in CLASSES}
STUDY_LABEL_SOURCE = "one-hot ground truth class: melanoma vs nevus (the ISIC Archive's benign_malignant)"
STUDY_NOTE = ("melanoma vs nevus only, as the study (its labels were the ISIC Archive's benign_malignant, set for "
              "melanocytic lesions); BCC, AKIEC, BKL, DF and VASC are excluded, each with its own reason")


def one_hot_to_class(df: pd.DataFrame, path: Path) -> pd.Series:
    values = df[list(CLASSES)].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        bad = values.isna().any(axis=1)
        raise SourceFormatError(f"{path}: non-numeric ground truth in row(s) for {df.loc[bad, 'image'].head(5).tolist()}")
    hot = values.to_numpy() > 0.5
    n_hot = hot.sum(axis=1)
    if (n_hot != 1).any():
        bad = df.loc[n_hot != 1, "image"].head(5).tolist()
        raise SourceFormatError(f"{path}: ground truth must be one-hot; rows {bad} have {sorted(set(n_hot[n_hot != 1]))} ones")
    return pd.Series([CLASSES[i] for i in hot.argmax(axis=1)], index=df.index)


class ISIC2018(Source):
    name = "isic2018"
    title = "ISIC 2018 task 3"
    licence = "CC BY-NC 4.0"
    url = "https://challenge.isic-archive.com/data/#2018"
    modality = "dermoscopic"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = None  # official
    LABEL_SOURCE = "one-hot ground truth class"
    STUDY_LABEL_TABLE = STUDY_LABEL_TABLE
    STUDY_LABEL_SOURCE = STUDY_LABEL_SOURCE
    STUDY_NOTE = STUDY_NOTE

    @classmethod
    def add_arguments(cls, parser):
        add_archive_metadata_argument(parser)

    def read(self, raw: Path) -> SourceRows:
        frame, notes, missing = read_ground_truth(raw)
        if not len(frame):
            raise SourceFormatError(f"ISIC 2018 task 3: no ground-truth file ({', '.join(GROUND_TRUTH.values())}) "
                                    f"under {raw}")
        notes = [f"{name} not found: split {split!r} is empty" for split, name in missing.items()] + notes
        frame, added = with_archive_metadata(frame, self.option("archive_metadata", []))
        notes += added
        return SourceRows(frame=frame, notes=notes, image_index=ImageIndex(image_roots(raw, self.options)))


def add_archive_metadata_argument(parser) -> None:
    parser.add_argument("--archive-metadata", action="append", default=None, metavar="CSV",
                        help="ISIC Archive metadata export(s) of these images (isic_id, lesion_id, age_approx, sex, "
                             "anatom_site_general, ...): fill in lesion ids and age/sex/site (repeatable)")


def with_archive_metadata(frame: pd.DataFrame, files) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with lesion ids, age, sex and site filled in from ISIC Archive exports."""
    from .isic_archive import archive_fields

    notes = []
    for file in files or []:
        fields, note = archive_fields(Path(file).expanduser())
        frame = fill_from(frame, fields)
        notes.append(note)
    return frame, notes


def read_ground_truth(raw: Path) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """Every ISIC 2018 task 3 ground-truth file under ``raw`` as one frame (``img_id``,
    ``diagnosis`` lower-case, ``label_key`` = the class, ``split`` = the part it came from, and
    ``lesion_id`` where the lesion groupings file is present).
    Returns (frame, notes, {split: file name} of the parts not found)."""
    frames, notes, missing = [], [], {}
    search = raw if raw.is_dir() else raw.parent
    for split, name in GROUND_TRUTH.items():
        hits = [search / name] if (search / name).is_file() else sorted(search.rglob(name))
        if not hits:
            missing[split] = name
            continue
        path = hits[0]
        df = read_published_csv(path)
        check_columns(path, df.columns, ("image",) + CLASSES, "ISIC 2018 task 3 ground truth")
        frames.append(pd.DataFrame({"img_id": df["image"], "diagnosis": one_hot_to_class(df, path), "split": split}))
    if not frames:
        return pd.DataFrame(columns=["img_id", "diagnosis", "label_key", "split"]), notes, missing
    frame = pd.concat(frames, ignore_index=True)
    frame["label_key"] = frame["diagnosis"]
    frame["diagnosis"] = frame["diagnosis"].str.lower()
    groupings = sorted(search.rglob(GROUPINGS))
    if groupings:
        g = read_published_csv(groupings[0])
        check_columns(groupings[0], g.columns, ("image", "lesion_id"), "ISIC 2018 lesion groupings")
        frame = frame.merge(g[["image", "lesion_id"]].rename(columns={"image": "img_id"}), on="img_id", how="left")
        notes.append(f"lesion ids from {groupings[0].name}")
    return frame, notes, missing
