"""SD-198 (Sun et al. 2016): 6,584 clinical photographs of 198 skin conditions.

Published either as one folder per class (``Basal_Cell_Carcinoma/000424HB.jpg``) or with the
release text files ``classes.txt`` (``<idx> <name>``), ``images.txt`` (``<image_idx> <relative
path>``) and ``image_class_labels.txt`` (``<image_idx> <class_idx>``, 1-based). Malignant means one
of six exact class names; every other class is benign except actinic keratosis, which follows the
premalignant policy (the study counted it benign). The study undersampled benign images to the
malignant count, then split 70/15/15; ``--balance none`` keeps every image.
``--labels study`` is exactly that (the six classes, every other class benign including
actinic keratosis, ``--balance undersample``); ``--balance none`` is refused with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ... import BENIGN, MALIGNANT
from ...errors import SourceFormatError, UsageError
from ..exclusions import exclusions_for
from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import IMAGE_EXTENSIONS

MALIGNANT_CLASSES = ("Basal_Cell_Carcinoma", "Bowen's_Disease", "Malignant_Melanoma", "Lentigo_Maligna_Melanoma",
                     "Cutaneous_T-Cell_Lymphoma", "Metastatic_Carcinoma")
#: The release names its actinic keratosis class ``Actinic_solar_Damage(Actinic_Keratosis)`` (one of
#: seven ``Actinic_solar_Damage(...)`` classes); ``Actinic_Keratosis`` is kept for re-packaged copies.
#: Cutaneous horn is premalignant too (PRODUCT §4). All follow ``--premalignant``; ``paper`` = benign.
PREMALIGNANT_CLASSES = ("Actinic_Keratosis", "Actinic_solar_Damage(Actinic_Keratosis)", "Cutaneous_Horn")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise SourceFormatError(f"{path} line {n}: expected '<index> <value>', got {line!r}")
        pairs.append((parts[0], parts[1].strip()))
    return pairs


class SD198(Source):
    name = "sd-198"
    title = "SD-198"
    licence = "research use (see the SD-198 release)"
    url = "https://link.springer.com/chapter/10.1007/978-3-319-46466-4_13"
    modality = "clinical"
    PAPER_PREMALIGNANT = "benign"
    SPLIT = SplitSpec((0.70, 0.15, 0.15), group_by=())
    LABEL_SOURCE = "class name"
    STUDY_NOTE = ("the six malignant classes exactly, every other class benign (actinic keratosis too), benign "
                  "undersampled to the malignant count (seeded), 70/15/15 as the study (its sklearn resample "
                  "cannot be replayed, so the benign images differ)")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--balance", choices=("undersample", "none"), default="undersample",
                            help="undersample benign images to the malignant count (paper) or keep all")

    def __init__(self, options=None):
        super().__init__(options)
        self._classes: list[str] = []

    def select_labels(self, definition: str) -> None:
        super().select_labels(definition)
        if definition == "study" and self.option("balance", "undersample") != "undersample":
            raise UsageError("--balance none contradicts --labels study (the study undersampled benign images to "
                             "the malignant count); drop --balance, or use --labels complete")

    def label_table(self) -> dict[str, str]:
        """Every class found, benign unless named malignant/premalignant (exact class names); under
        ``study`` the premalignant classes are benign, as the study counted them."""
        table = {c: MALIGNANT for c in MALIGNANT_CLASSES}
        table.update({c: "premalignant" if self.labels != "study" else BENIGN for c in PREMALIGNANT_CLASSES})
        for c in self._classes:
            table.setdefault(c, BENIGN)
        return table

    def read(self, raw: Path) -> SourceRows:
        base = raw if raw.is_dir() else raw.parent
        release = [base / n for n in ("classes.txt", "images.txt", "image_class_labels.txt")]
        if all(p.is_file() for p in release):
            frame, image_root = self._read_release(*release)
            notes = ["read the release text files"]
        else:
            frame, image_root = self._read_folders(base), base
            notes = ["read class folders"]
        self._classes = sorted(frame["diagnosis"].unique())
        absent = [c for c in MALIGNANT_CLASSES if c not in self._classes]
        if absent:  # a renamed folder would otherwise be labelled benign without a word
            notes.append(f"malignant class(es) not found (check the folder names): {', '.join(absent)}")
        src = frame["relpath"].map(lambda r: image_root / r)
        exists = src.map(lambda p: p.is_file())
        frame["src"] = src.where(exists, None).map(lambda p: None if p is None else str(p))
        # Image names are unique only within a class folder: prefix the class.
        frame["img_id"] = frame["relpath"].map(lambda r: Path(r).parts[-2] + "__" + Path(r).name
                                               if len(Path(r).parts) > 1 else Path(r).name)
        frame["label_key"] = frame["diagnosis"]
        return SourceRows(frame=frame.drop(columns=["relpath"]), notes=notes)

    @staticmethod
    def _read_folders(base: Path) -> pd.DataFrame:
        rows = []
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    rows.append({"relpath": f"{folder.name}/{f.name}", "diagnosis": folder.name})
        if not rows:
            raise SourceFormatError(f"SD-198: no class folders with images under {base}, and no release files "
                                    f"classes.txt / images.txt / image_class_labels.txt")
        return pd.DataFrame(rows)

    @staticmethod
    def _read_release(classes_txt: Path, images_txt: Path, labels_txt: Path) -> tuple[pd.DataFrame, Path]:
        classes = dict(_read_pairs(classes_txt))
        images = dict(_read_pairs(images_txt))
        rows = []
        for image_idx, class_idx in _read_pairs(labels_txt):
            if image_idx not in images:
                raise SourceFormatError(f"{labels_txt}: image {image_idx} is not listed in {images_txt.name}")
            if class_idx not in classes:
                raise SourceFormatError(f"{labels_txt}: class {class_idx} (1-based) is not in {classes_txt.name}")
            rows.append({"relpath": images[image_idx], "diagnosis": classes[class_idx]})
        base = classes_txt.parent
        image_root = base / "images" if (base / "images").is_dir() and not any(
            (base / r).is_file() for r in list(images.values())[:5]) else base
        return pd.DataFrame(rows), image_root

    def subsample(self, frame: pd.DataFrame, rng: np.random.Generator):
        if self.option("balance", "undersample") == "none":
            return frame, [], ""
        malignant = frame[frame["benign_malignant"] == MALIGNANT]
        benign = frame[frame["benign_malignant"] == BENIGN]
        if len(benign) <= len(malignant):
            return frame, [], ""
        pick = np.sort(rng.choice(len(benign), size=len(malignant), replace=False))
        kept = benign.iloc[pick]
        dropped = benign.drop(index=kept.index)
        policy = f"benign undersampled to the malignant count ({len(malignant)} of {len(benign)}, seeded)"
        return (pd.concat([malignant, kept]).sort_index(),
                exclusions_for(dropped["img_id"], "subsampled", policy), policy)
