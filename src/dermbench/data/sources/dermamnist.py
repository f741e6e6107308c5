"""DermaMNIST (MedMNIST v2, Yang et al. 2023): HAM10000 resized to 28, 64, 128 or 224 px with the
**official** 7:1:2 split (7,007 / 1,003 / 2,005).

Published as ``dermamnist.npz`` (28 px) or ``dermamnist_{64,128,224}.npz`` with arrays
``{train,val,test}_images`` (N×H×W×3 uint8) and ``{train,val,test}_labels`` (N×1, class 0–6).
Each image is written out as a PNG named ``dermamnist_<split>_<index>.png``. There are no lesion
ids in the release, so nothing stops two images of one HAM lesion being in different splits —
``dermbench audit`` reports such near duplicates.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import SourceFormatError
from .base import Source, SourceRows

#: MedMNIST's class index -> name (medmnist INFO["dermamnist"]["label"])
CLASS_NAMES = {
    0: "actinic keratoses and intraepithelial carcinoma",
    1: "basal cell carcinoma",
    2: "benign keratosis-like lesions",
    3: "dermatofibroma",
    4: "melanoma",
    5: "melanocytic nevi",
    6: "vascular lesions",
}
LABEL_TABLE = {
    CLASS_NAMES[0]: "premalignant",  # akiec, as in HAM10000
    CLASS_NAMES[1]: "malignant",
    CLASS_NAMES[2]: "benign",
    CLASS_NAMES[3]: "benign",
    CLASS_NAMES[4]: "malignant",
    CLASS_NAMES[5]: "benign",
    CLASS_NAMES[6]: "benign",
}
NPZ_SPLITS = {"train": "train", "val": "validation", "test": "test"}


class DermaMNIST(Source):
    name = "dermamnist"
    title = "DermaMNIST (MedMNIST v2)"
    licence = "CC BY-NC 4.0"
    url = "https://medmnist.com/"
    modality = "dermoscopic"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = None
    LABEL_SOURCE = "MedMNIST class"
    NO_STUDY_LABELS = ("the study did not evaluate DermaMNIST (its HAM10000 is the ISIC 2018 task 3 pool: "
                       "`dermbench prepare ham10000 --labels study`); use --labels complete")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--size", type=int, choices=(28, 64, 128, 224), default=28,
                            help="which release to read: dermamnist.npz (28) or dermamnist_<size>.npz")
        parser.add_argument("--npz", help="the .npz file (default: found under --raw by --size)")

    def read(self, raw: Path) -> SourceRows:
        size = int(self.option("size", 28))
        name = "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"
        if self.option("npz"):
            path = Path(self.option("npz")).expanduser()
        elif raw.is_file():
            path = raw
        else:
            path = raw / name
            if not path.is_file():
                hits = sorted(raw.rglob(name))
                if not hits:
                    raise SourceFormatError(f"DermaMNIST: {name} not found under {raw} (download it from "
                                            f"medmnist.com; --size picks the resolution)")
                path = hits[0]
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceFormatError(f"{path}: not a readable .npz ({exc})") from exc
        arrays = {}
        frames = []
        for key, split in NPZ_SPLITS.items():
            if f"{key}_images" not in data or f"{key}_labels" not in data:
                raise SourceFormatError(f"{path}: missing {key}_images / {key}_labels; found {sorted(data.files)}")
            images = data[f"{key}_images"]
            labels = np.asarray(data[f"{key}_labels"]).reshape(-1)
            if len(images) != len(labels):
                raise SourceFormatError(f"{path}: {len(images)} {key} images but {len(labels)} labels")
            unknown = sorted(set(labels.tolist()) - set(CLASS_NAMES))
            if unknown:
                raise SourceFormatError(f"{path}: {key}_labels has class indices {unknown}; DermaMNIST has 0-6")
            arrays[key] = images
            ids = [f"dermamnist_{key}_{i:05d}" for i in range(len(images))]
            diagnosis = [CLASS_NAMES[int(c)] for c in labels]
            frames.append(pd.DataFrame({
                "img_id": [i + ".png" for i in ids], "src": [f"{key}:{i}" for i in range(len(images))],
                "diagnosis": diagnosis, "label_key": diagnosis, "split": split, "dermamnist_index": range(len(images)),
            }))

        def png_bytes(src: str) -> bytes:
            from PIL import Image

            key, index = src.split(":")
            arr = np.asarray(arrays[key][int(index)], dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB").save(buf, format="PNG")
            return buf.getvalue()

        return SourceRows(frame=pd.concat(frames, ignore_index=True), image_bytes=png_bytes,
                          notes=[f"{path.name}: {size} px, official split"])
