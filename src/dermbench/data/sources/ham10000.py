"""HAM10000 (Tschandl et al. 2018): 10,015 dermoscopic images of 7,470 lesions.

Published as ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,localization``;
the Kaggle/ISIC copy has LF and float ages, the Harvard Dataverse copy an extra ``dataset`` column,
integer ages, CRLF and no final newline) plus ``HAM10000_images_part_1/2``. There is no official
split, and up to six images show the same lesion, so the split is grouped by ``lesion_id``
(75/12.5/12.5 as in the study).
"""

from __future__ import annotations

from pathlib import Path

from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, clean_number, clean_text, find_file, image_roots, read_published_csv

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

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="metadata CSV (default: HAM10000_metadata.csv under --raw)")

    def read(self, raw: Path) -> SourceRows:
        path = find_file(raw, ["HAM10000_metadata.csv", "HAM10000_metadata", "HAM10000_metadata.tab"],
                         "HAM10000 metadata", self.option("metadata"))
        df = read_published_csv(path)
        check_columns(path, df.columns, HAM_COLUMNS, "HAM10000 metadata", allowed_extra=("dataset",))
        frame = df.rename(columns={"image_id": "img_id", "dx": "diagnosis", "localization": "site"})
        frame["label_key"] = frame["diagnosis"]
        frame["age"] = frame["age"].map(clean_number)
        frame["sex"] = frame["sex"].map(clean_text)
        frame["site"] = frame["site"].map(clean_text)
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)),
                          notes=[f"metadata file {path.name}"])
