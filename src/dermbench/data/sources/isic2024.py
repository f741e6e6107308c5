"""ISIC 2024 challenge (SLICE-3D): 3D total-body-photography crops, 401,059 training images of
which 393 are malignant.

Published as ``train-metadata.csv`` (``isic_id, target, patient_id, age_approx, sex,
anatom_site_general, clin_size_long_diam_mm, iddx_*`` and ~40 TBP features) with images either
as a folder of ``<isic_id>.jpg`` or in ``train-image.hdf5`` (one dataset per ``isic_id`` holding
the JPEG bytes). The study kept every malignant image and sampled benign ones up to 1,000 images
in total, then split 70/15/15 grouped by patient; ``--total`` changes the size (0 = everything).
``--labels study`` is that (``target``, ``--total 1000``); another ``--total`` is refused with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ... import BENIGN, MALIGNANT
from ...errors import UsageError
from ..exclusions import exclusions_for
from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, clean_number, clean_text, find_file, image_roots, read_published_csv

LABEL_TABLE = {"1": "malignant", "0": "benign"}
#: the study's size: every malignant image and benign ones sampled up to this total
STUDY_TOTAL = 1000

#: published column -> contract column (kept), plus clinical columns kept under their own name
RENAMES = {"isic_id": "img_id", "age_approx": "age", "anatom_site_general": "site", "iddx_full": "diagnosis"}
KEEP = ("patient_id", "lesion_id", "sex", "clin_size_long_diam_mm", "image_type", "tbp_tile_type",
        "tbp_lv_location", "iddx_1", "attribution", "copyright_license", "target")


def hdf5_reader(path: Path):
    """``isic_id`` -> JPEG bytes from the published ``train-image.hdf5``."""
    import h5py

    handle = h5py.File(path, "r")

    def read(isic_id: str) -> bytes:
        value = handle[isic_id][()]
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, np.void):
            return value.tobytes()
        return np.asarray(value).tobytes()

    read.keys = set(handle.keys())  # type: ignore[attr-defined]
    return read


class ISIC2024(Source):
    name = "isic2024"
    title = "ISIC 2024 (SLICE-3D)"
    licence = "per image: CC-BY / CC-BY-NC / CC-0 (copyright_license column)"
    url = "https://challenge2024.isic-archive.com/"
    modality = "tbp"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = SplitSpec((0.70, 0.15, 0.15), group_by=("patient_id",))
    LABEL_SOURCE = "target"
    STUDY_NOTE = (f"target as published; every malignant image + benign sampled to {STUDY_TOTAL} in total (seeded), "
                  f"70/15/15 as the study (its pandas sample cannot be replayed, so the benign images differ)")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="metadata CSV (default: train-metadata.csv under --raw)")
        parser.add_argument("--hdf5", help="train-image.hdf5 to read images from (default: used when "
                                           "present under --raw and no image folder is given)")
        parser.add_argument("--total", type=int, default=1000,
                            help="keep every malignant image and sample benign ones up to this total "
                                 "(paper: 1000); 0 keeps everything")

    def select_labels(self, definition: str) -> None:
        super().select_labels(definition)
        if definition == "study" and int(self.option("total", STUDY_TOTAL)) != STUDY_TOTAL:
            raise UsageError(f"--total {self.option('total')} contradicts --labels study (the study sampled "
                             f"{STUDY_TOTAL} images); drop --total, or use --labels complete")

    def read(self, raw: Path) -> SourceRows:
        path = find_file(raw, ["train-metadata.csv"], "ISIC 2024 metadata", self.option("metadata"))
        df = read_published_csv(path)
        check_columns(path, df.columns, ("isic_id", "target", "patient_id"), "ISIC 2024 train metadata")
        frame = df.rename(columns=RENAMES)
        keep = [c for c in ("img_id", "age", "site", "diagnosis") + KEEP if c in frame.columns]
        frame = frame[keep].copy()
        frame["label_key"] = frame["target"].map(clean_number)
        frame["age"] = frame["age"].map(clean_number) if "age" in frame else None
        frame["sex"] = frame["sex"].map(clean_text) if "sex" in frame else None
        if "lesion_id" in frame and frame["lesion_id"].isna().all():
            frame = frame.drop(columns=["lesion_id"])
        h5 = self.option("hdf5")
        base = raw if raw.is_dir() else raw.parent
        if not h5 and not self.option("images") and (base / "train-image.hdf5").is_file():
            h5 = base / "train-image.hdf5"
        if h5:
            reader = hdf5_reader(Path(h5))
            present = frame["img_id"].isin(reader.keys)  # type: ignore[attr-defined]
            frame["src"] = frame["img_id"].where(present, None)
            frame["img_id"] = frame["img_id"] + ".jpg"
            return SourceRows(frame=frame, image_bytes=reader, notes=[f"images from {Path(h5).name}"])
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)))

    def subsample(self, frame: pd.DataFrame, rng: np.random.Generator):
        total = int(self.option("total", 1000))
        if total <= 0:
            return frame, [], ""
        malignant = frame[frame["benign_malignant"] == MALIGNANT]
        benign = frame[frame["benign_malignant"] == BENIGN]
        n_benign = max(0, total - len(malignant))
        if n_benign >= len(benign):
            return frame, [], f"all {len(frame)} images kept (--total {total} >= available)"
        pick = np.sort(rng.choice(len(benign), size=n_benign, replace=False))
        kept_benign = benign.iloc[pick]
        dropped = benign.drop(index=kept_benign.index)
        out = pd.concat([malignant, kept_benign]).sort_index()
        policy = (f"all {len(malignant)} malignant + {n_benign} of {len(benign)} benign sampled "
                  f"(total {total}, seeded)")
        return out, exclusions_for(dropped["img_id"], "subsampled", policy), policy
