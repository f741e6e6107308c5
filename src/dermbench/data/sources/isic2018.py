"""ISIC 2018 challenge task 3 (lesion diagnosis): HAM10000 training images plus new validation
and test images, with the **official** train/validation/test split (10,015 / 193 / 1,512).

Published as ``ISIC2018_Task3_{Training,Validation,Test}_GroundTruth.csv`` (``image`` + one-hot
float columns ``MEL,NV,BCC,AKIEC,BKL,DF,VASC``) and ``..._Input`` image folders; optionally
``ISIC2018_Task3_Training_LesionGroupings.csv`` (``image,lesion_id,diagnosis_confirm_type``).
Splits whose ground-truth file is absent stay empty (and are reported).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import SourceFormatError
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, image_roots, read_published_csv

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

    def read(self, raw: Path) -> SourceRows:
        frames = []
        notes = []
        search = raw if raw.is_dir() else raw.parent
        for split, name in GROUND_TRUTH.items():
            hits = [search / name] if (search / name).is_file() else sorted(search.rglob(name))
            if not hits:
                notes.append(f"{name} not found: split {split!r} is empty")
                continue
            path = hits[0]
            df = read_published_csv(path)
            check_columns(path, df.columns, ("image",) + CLASSES, "ISIC 2018 task 3 ground truth")
            frame = pd.DataFrame({"img_id": df["image"], "diagnosis": one_hot_to_class(df, path), "split": split})
            frames.append(frame)
        if not frames:
            raise SourceFormatError(f"ISIC 2018 task 3: no ground-truth file ({', '.join(GROUND_TRUTH.values())}) "
                                    f"under {raw}")
        frame = pd.concat(frames, ignore_index=True)
        frame["label_key"] = frame["diagnosis"]
        frame["diagnosis"] = frame["diagnosis"].str.lower()
        groupings = sorted(search.rglob(GROUPINGS))
        if groupings:
            g = read_published_csv(groupings[0])
            check_columns(groupings[0], g.columns, ("image", "lesion_id"), "ISIC 2018 lesion groupings")
            frame = frame.merge(g[["image", "lesion_id"]].rename(columns={"image": "img_id"}), on="img_id", how="left")
            notes.append(f"lesion ids from {groupings[0].name}")
        return SourceRows(frame=frame, notes=notes, image_index=ImageIndex(image_roots(raw, self.options)))
