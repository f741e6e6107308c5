"""The ``isic-archive`` source on real ISIC Archive exports (../shared/fixtures/raw/isic_archive):
the 30 real images with their 100-row isic-cli metadata, and the ISIC 2018 task 3 collection
exports (CRLF, every row repeated) with a fake image per ``isic_id``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermbench.data.contract import load_dataset
from dermbench.data.sources.prepare import prepare
from dermbench.data.splits import group_overlap
from dermbench.errors import SourceFormatError

from test_sources import all_rows
from test_sources_study import by_reason, fake_images, total

DOWNLOAD = "isic_archive/isic2018_task12_validation_download_2024-10/ISIC-images"
EXPORTS = "isic_archive/isic2018_task3_export_2024-09"
TEST_EXPORT = "challenge-2018-task-3-test_metadata_2024-09-20.csv"
TRAINING_EXPORT = "challenge-2018-task-1-2-training_metadata_2024-09-20.csv"


def label_of(out: Path, isic_id: str) -> str:
    rows = all_rows(out)
    return rows.loc[rows["img_id"] == f"{isic_id}.jpg", "benign_malignant"].item()


@pytest.fixture(scope="module")
def exports_raw(fixtures_raw, tmp_path_factory) -> Path:
    """A fake image for every isic_id of the task 3 test and validation exports and the task 1-2
    training export."""
    raw = tmp_path_factory.mktemp("archive")
    ids = set()
    for name in (TEST_EXPORT, TRAINING_EXPORT, "ISIC-images-Validation/metadata.csv"):
        ids |= set(pd.read_csv(fixtures_raw / EXPORTS / name, dtype=str)["isic_id"])
    fake_images(raw / "images", sorted(ids), ".jpg")
    return raw


def test_isic_cli_download_with_real_images(fixtures_raw, tmp_path):
    raw = fixtures_raw / DOWNLOAD
    study = prepare("isic-archive", raw, tmp_path / "study", labels="study", quiet=True)
    assert total(study, "benign") + total(study, "malignant") == 30
    assert by_reason(study) == {"missing_image": 70}  # the download holds 30 of its 100 images
    assert study["label_definition"] == "study" and "benign_malignant" in study["label_source"]
    ds = load_dataset(tmp_path / "study", quiet=True)  # the real JPEGs decode through the contract
    assert not ds.exclusions
    # The Archive's own benign_malignant, inconsistencies included (SOURCE.md): SCC in situ filed as a
    # seborrheic keratosis is 'malignant'; two actinic keratoses filed as seborrheic keratosis 'benign'
    assert label_of(tmp_path / "study", "ISIC_0021037") == "malignant"
    assert label_of(tmp_path / "study", "ISIC_0021714") == "benign"

    complete = prepare("isic-archive", raw, tmp_path / "complete", quiet=True)
    # by the diagnosis hierarchy: the atypical melanocytic neoplasm (Indeterminate) is excluded,
    # the actinic keratoses are premalignant (paper policy: malignant)
    assert by_reason(complete) == {"missing_image": 70, "excluded_class": 1}
    assert label_of(tmp_path / "complete", "ISIC_0021037") == "malignant"
    assert label_of(tmp_path / "complete", "ISIC_0021714") == "malignant"
    assert label_of(tmp_path / "complete", "ISIC_0021914") == "malignant"
    benign_ak = prepare("isic-archive", raw, tmp_path / "benign_ak", premalignant="benign", quiet=True)
    assert label_of(tmp_path / "benign_ak", "ISIC_0021714") == "benign"
    assert total(benign_ak, "malignant") == total(complete, "malignant") - 2

    rows = all_rows(tmp_path / "complete")
    assert {"patient_id", "lesion_id", "site", "age", "sex", "diagnosis_1", "archive_benign_malignant",
            "diagnosis_legacy", "copyright_license", "attribution"} <= set(rows.columns)
    assert set(rows["modality"]) == {"dermoscopic"}
    assert rows.loc[rows["img_id"] == "ISIC_0021037.jpg", "diagnosis"].item() == "Squamous cell carcinoma in situ"
    assert group_overlap(rows, "patient_id") == {}
    assert "patient_id" in complete["split_policy"]


def test_collection_export_repeats_are_deduplicated(fixtures_raw, exports_raw, tmp_path):
    """The Task 3 test export lists each of its 1,512 images twice (CRLF): one row per isic_id, the
    study's 909 / 171, every other diagnosis excluded by name."""
    card = prepare("isic-archive", exports_raw, tmp_path / "test", labels="study", quiet=True,
                   options={"metadata": str(fixtures_raw / EXPORTS / TEST_EXPORT)})
    assert total(card, "benign") == 909 and total(card, "malignant") == 171
    assert by_reason(card) == {
        "study_excluded_pigmented_benign_keratosis": 217, "study_excluded_basal_cell_carcinoma": 93,
        "study_excluded_dermatofibroma": 44, "study_excluded_vascular_lesion": 35,
        "study_excluded_squamous_cell_carcinoma": 24, "study_excluded_actinic_keratosis": 19}
    assert any("1512 repeated row(s) dropped" in n for n in card["notes"])
    assert group_overlap(all_rows(tmp_path / "test"), "lesion_id") == {}
    complete = prepare("isic-archive", exports_raw, tmp_path / "complete", quiet=True,
                       options={"metadata": str(fixtures_raw / EXPORTS / TEST_EXPORT)})
    assert total(complete, "malignant") == 171 + 93 + 24 + 19 and total(complete, "benign") == 909 + 217 + 44 + 35

    training = prepare("isic-archive", exports_raw, tmp_path / "training", labels="study", quiet=True,
                       options={"metadata": str(fixtures_raw / EXPORTS / TRAINING_EXPORT)})
    assert by_reason(training) == {"study_excluded_indeterminate": 5, "study_excluded_indeterminate_benign": 2}
    assert any("7782 repeated row(s)" in n for n in training["notes"])  # 10,376 rows, 2,594 images


def test_given_split_file_reproduces_the_official_validation_and_test(fixtures_raw, exports_raw, tmp_path):
    """Validation (an image-download metadata.csv) and test (a collection export) in one metadata
    file, the split given by a file: the ISIC 2018 validation/test sets as the study saw them."""
    validation = pd.read_csv(fixtures_raw / EXPORTS / "ISIC-images-Validation" / "metadata.csv", dtype=str)
    test = pd.read_csv(fixtures_raw / EXPORTS / TEST_EXPORT, dtype=str)
    meta = tmp_path / "metadata.csv"
    pd.concat([validation, test]).to_csv(meta, index=False, lineterminator="\r\n")
    split_file = tmp_path / "splits.csv"
    pd.DataFrame({"isic_id": list(validation["isic_id"]) + list(test["isic_id"].unique())[:-12],
                  "split": ["val"] * len(validation) + ["test"] * (1512 - 12)}).to_csv(split_file, index=False)
    card = prepare("isic-archive", exports_raw, tmp_path / "out", labels="study", quiet=True,
                   options={"metadata": str(meta), "split_file": str(split_file)})
    assert card["split_grouping"] == "official" and card["split_policy"] == f"split as given by {split_file}"
    assert card["counts"]["validation"] == {"benign": 123, "malignant": 21}
    assert card["counts"]["train"] == {"benign": 0, "malignant": 0}
    unlisted = test.drop_duplicates("isic_id").tail(12)
    labelled = int(unlisted["benign_malignant"].notna().sum())  # the others are study exclusions already
    assert 0 < labelled < 12 and by_reason(card)["no_split"] == labelled
    assert sum(card["counts"]["test"].values()) == 1080 - labelled

    test["cohort"] = "testing"
    column_meta = tmp_path / "with_column.csv"
    test.to_csv(column_meta, index=False)
    by_column = prepare("isic-archive", exports_raw, tmp_path / "col", labels="study", quiet=True,
                        options={"metadata": str(column_meta), "split_column": "cohort"})
    assert by_column["counts"]["test"] == {"benign": 909, "malignant": 171}


def test_rows_that_disagree_and_values_outside_the_schema(fixtures_raw, exports_raw, tmp_path):
    rows = pd.read_csv(fixtures_raw / EXPORTS / TEST_EXPORT, dtype=str, keep_default_na=False)
    first = rows["isic_id"].iloc[0]
    conflicting = rows.copy()
    conflicting.loc[conflicting.index[1], "benign_malignant"] = "malignant"  # its repeat says otherwise
    assert conflicting.loc[conflicting.index[1], "isic_id"] == first
    path = tmp_path / "conflict.csv"
    conflicting.to_csv(path, index=False)
    card = prepare("isic-archive", exports_raw, tmp_path / "c", labels="study", quiet=True,
                   options={"metadata": str(path)})
    conflict = [e for e in card["excluded"] if e["reason"] == "conflicting_isic_id_rows"]
    assert conflict[0]["count"] == 1 and conflict[0]["examples"] == [first]
    assert "benign_malignant" in conflict[0]["detail"]

    bad = rows.drop_duplicates().copy()
    bad.loc[bad.index[3], "sex"] = "mle"
    bad.loc[bad.index[4], "anatom_site_general"] = "torso"
    bad_path = tmp_path / "bad.csv"
    bad.to_csv(bad_path, index=False)
    with pytest.raises(SourceFormatError, match=r"sex 'mle'.*anatom_site_general 'torso'|anatom_site_general "
                                                r"'torso'.*sex 'mle'"):
        prepare("isic-archive", exports_raw, tmp_path / "b", quiet=True, options={"metadata": str(bad_path)})

    unknown = rows.drop_duplicates().copy()
    unknown.loc[unknown.index[0], "diagnosis"] = "melanoma?"
    unknown_path = tmp_path / "unknown.csv"
    unknown.to_csv(unknown_path, index=False)
    with pytest.raises(SourceFormatError, match=r"legacy diagnosis .*'melanoma\?' \(1\)"):
        prepare("isic-archive", exports_raw, tmp_path / "u", quiet=True, options={"metadata": str(unknown_path)})

    path_rows = pd.read_csv(fixtures_raw / DOWNLOAD / "metadata.csv", dtype=str, keep_default_na=False)
    path_rows.loc[path_rows.index[0], "diagnosis_3"] = "Nevus, Purple"
    hierarchy_path = tmp_path / "hierarchy.csv"
    path_rows.to_csv(hierarchy_path, index=False)
    with pytest.raises(SourceFormatError, match="Nevus, Purple"):
        prepare("isic-archive", fixtures_raw / DOWNLOAD, tmp_path / "h", quiet=True,
                options={"metadata": str(hierarchy_path)})


def test_metadata_file_is_found_or_named(fixtures_raw, tmp_path):
    raw = tmp_path / "two"
    raw.mkdir()
    for name in (TEST_EXPORT, TRAINING_EXPORT):
        shutil.copy(fixtures_raw / EXPORTS / name, raw)
    with pytest.raises(SourceFormatError, match="2 metadata CSV.*--metadata"):
        prepare("isic-archive", raw, tmp_path / "out", quiet=True)


def test_legacy_vocabulary_is_the_schemas_and_agrees_with_the_hierarchy():
    """Every legacy diagnosis of isic-metadata has a label; where the legacy name is also a name in
    the diagnosis hierarchy, both give the same label."""
    from isic_metadata.fields import DiagnosisEnum, LegacyDxEnum

    from dermbench.data.sources.isic_archive import hierarchy_label, legacy_labels

    table = legacy_labels()
    assert set(table) == {dx.value for dx in LegacyDxEnum}
    assert table["actinic keratosis"] == "premalignant" and table["melanoma"] == "malignant"
    assert table["nevus"] == "benign" and table["AIMP"] == "exclude"
    by_terminal = {d.value.split(":")[-1].casefold(): d.value for d in DiagnosisEnum}
    compared = 0
    for name, label in table.items():
        path = by_terminal.get(name.casefold())
        if path is not None:
            assert hierarchy_label(path) == label, name
            compared += 1
    assert compared >= 20
    assert hierarchy_label("Indeterminate:Indeterminate epidermal proliferations:Solar or actinic keratosis:"
                           "Actinic keratosis, Bowenoid") == "premalignant"
    assert hierarchy_label("Indeterminate:Indeterminate melanocytic proliferations:Atypical Spitz tumor") == "exclude"
