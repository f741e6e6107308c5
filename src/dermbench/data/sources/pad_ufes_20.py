"""PAD-UFES-20 (Pacheco et al. 2020): 2,298 smartphone images of 1,641 lesions of 1,373 patients.

Published as ``metadata.csv`` (26 columns: ``patient_id, lesion_id, ..., fitspatrick, region,
diagnostic, ..., img_id, biopsed``; clinical fields empty for non-biopsied rows, ``UNK`` for
unknown, float ``fitspatrick``, ``True/False`` strings) and ``imgs_part_1..3`` folders of PNGs,
some RGBA. BCC, SCC (Bowen's merged in by the authors) and MEL are biopsy-proven cancers; ACK
(actinic keratosis) is premalignant: the study's test prevalence implies it counted malignant.
Split 75/12.5/12.5 grouped by patient (one patient, several lesions). Under ``--labels study``
ACK is malignant (the study's test prevalence, STUDY.md §4.4), whatever the premalignant policy.
"""

from __future__ import annotations

from pathlib import Path

from ..splits import SplitSpec
from .base import Source, SourceRows
from .raw import ImageIndex, check_columns, clean_number, clean_text, find_file, image_roots, read_published_csv

PAD_COLUMNS = ("patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age",
               "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water",
               "has_sewage_system", "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic", "itch",
               "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed")

LABEL_TABLE = {
    "BCC": "malignant",  # basal cell carcinoma
    "SCC": "malignant",  # squamous cell carcinoma (incl. Bowen's disease)
    "MEL": "malignant",  # melanoma
    "ACK": "premalignant",  # actinic keratosis
    "NEV": "benign",     # nevus
    "SEK": "benign",     # seborrheic keratosis
}


class PADUFES20(Source):
    name = "pad-ufes-20"
    title = "PAD-UFES-20"
    licence = "CC BY 4.0"
    url = "https://doi.org/10.17632/zr7vgbcyr2.1"
    modality = "clinical"
    LABEL_TABLE = LABEL_TABLE
    PAPER_PREMALIGNANT = "malignant"
    SPLIT = SplitSpec((0.75, 0.125, 0.125), group_by=("patient_id", "lesion_id"))
    LABEL_SOURCE = "diagnostic"
    STUDY_LABEL_TABLE = {dx: "malignant" if value == "premalignant" else value for dx, value in LABEL_TABLE.items()}
    STUDY_NOTE = ("ACK (actinic keratosis) counted malignant, as the study's test prevalence implies (its mapping "
                  "is not published); split 75/12.5/12.5 as the study's")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--metadata", help="metadata CSV (default: metadata.csv under --raw)")

    def read(self, raw: Path) -> SourceRows:
        path = find_file(raw, ["metadata.csv"], "PAD-UFES-20 metadata", self.option("metadata"))
        df = read_published_csv(path)
        check_columns(path, df.columns, ("patient_id", "lesion_id", "diagnostic", "img_id"), "PAD-UFES-20 metadata",
                      allowed_extra=PAD_COLUMNS)
        frame = df.rename(columns={"diagnostic": "diagnosis", "fitspatrick": "fitzpatrick", "region": "site",
                                   "gender": "sex"})
        frame["label_key"] = frame["diagnosis"]
        frame["lesion_id"] = frame["lesion_id"].map(clean_number)
        for col in ("age", "fitzpatrick", "diameter_1", "diameter_2"):
            if col in frame:
                frame[col] = frame[col].map(clean_number)
        for col in ("sex", "site"):
            if col in frame:
                frame[col] = frame[col].map(clean_text)
        notes = [f"metadata file {path.name}"]
        return SourceRows(frame=frame, image_index=ImageIndex(image_roots(raw, self.options)), notes=notes)
