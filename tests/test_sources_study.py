"""The named label definitions (``prepare --labels complete|study``), the study's ungrouped split
(``--split ungrouped``) and how both reach the run record and the report; real published files
from ../shared/fixtures/raw with a tiny fake image per row, synthetic SD-198 / DDI as in
test_sources.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermbench.data.contract import load_dataset
from dermbench.data.sources.prepare import prepare
from dermbench.data.splits import LEAKY_SPLIT_NOTE, group_overlap
from dermbench.errors import MergeError, UsageError

from test_sources import all_rows, make_sd198_folders, tiny_image

ISIC18_TEST_GT = "isic2018_task3/ISIC2018_Task3_Test_GroundTruth.csv"
TEST_EXPORT = "isic_archive/isic2018_task3_export_2024-09/challenge-2018-task-3-test_metadata_2024-09-20.csv"
CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def fake_images(folder: Path, names, suffix: str = ".png") -> None:
    """One distinct 4x4 image per name (PNG: fast, and the contract reads any of .jpg/.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((4, 4, 3), np.uint8)
    for i, name in enumerate(names):
        arr[0, 0, 0], arr[0, 1, 0], arr[0, 2, 0] = i % 256, (i // 256) % 256, i // 65536
        Image.fromarray(arr).save(folder / f"{name}{suffix}")


def by_reason(card: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in card["excluded"]:
        out[e["reason"]] = out.get(e["reason"], 0) + e["count"]
    return out


def total(card: dict, label: str) -> int:
    return sum(c[label] for c in card["counts"].values())


def ground_truth_classes(path: Path) -> pd.Series:
    gt = pd.read_csv(path)
    return gt[list(CLASSES)].idxmax(axis=1)


# ----------------------------------------------------------------------------- ISIC 2018 (done-when)

def test_isic2018_study_labels_give_the_studys_909_benign_171_malignant(fixtures_raw, tmp_path, capsys):
    """The issue's criterion: the real ISIC 2018 test ground truth, an image per row,
    ``prepare isic2018 --labels study`` -> test = 909 benign + 171 malignant, the other 432 rows
    reported by reason (one code per class)."""
    from dermbench.cli.main import main

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(fixtures_raw / ISIC18_TEST_GT, raw)
    gt = pd.read_csv(raw / "ISIC2018_Task3_Test_GroundTruth.csv")
    fake_images(raw / "ISIC2018_Task3_Test_Input", gt["image"], ".jpg")
    classes = ground_truth_classes(raw / "ISIC2018_Task3_Test_GroundTruth.csv").value_counts()
    assert classes.to_dict() == {"NV": 909, "BKL": 217, "MEL": 171, "BCC": 93, "DF": 44, "AKIEC": 43, "VASC": 35}

    out = tmp_path / "isic18_study"
    assert main(["prepare", "isic2018", "--raw", str(raw), "--out", str(out), "--labels", "study"]) == 0
    card = json.loads((out / "dataset.json").read_text())
    assert card["counts"]["test"] == {"benign": 909, "malignant": 171}
    assert card["counts"]["train"] == card["counts"]["validation"] == {"benign": 0, "malignant": 0}
    assert by_reason(card) == {"study_excluded_bkl": 217, "study_excluded_bcc": 93, "study_excluded_akiec": 43,
                               "study_excluded_df": 44, "study_excluded_vasc": 35}
    assert sum(by_reason(card).values()) == 432 == len(gt) - 909 - 171
    assert card["label_definition"] == "study" and card["split_grouping"] == "official"
    assert "melanoma vs nevus" in card["label_definition_note"]
    printed = capsys.readouterr().err
    assert "label definition 'study'" in printed and "study_excluded_bkl" in printed
    rows = all_rows(out)
    assert set(rows["diagnosis"]) == {"mel", "nv"}
    assert load_dataset(out, quiet=True).counts()["test"] == {"benign": 909, "malignant": 171}

    complete = prepare("isic2018", raw, tmp_path / "isic18_complete", quiet=True)
    assert complete["counts"]["test"] == {"benign": 909 + 217 + 44 + 35, "malignant": 171 + 93 + 43}
    assert complete["label_definition"] == "complete" and not by_reason(complete)


def test_isic2018_archive_metadata_adds_age_sex_site_and_lesion_ids(fixtures_raw, tmp_path):
    """The challenge files have no clinical fields; the ISIC Archive's export of the same images
    (what the study's ISIC 2018 set was) supplies them for the patient-metadata prompts."""
    export = pd.read_csv(fixtures_raw / TEST_EXPORT, dtype=str).drop_duplicates("isic_id").set_index("isic_id")
    out = tmp_path / "isic18"
    card = prepare("isic2018", fixtures_raw / "isic2018_task3", out, labels="study", quiet=True,
                   options={"archive_metadata": [str(fixtures_raw / TEST_EXPORT)]})
    rows = all_rows(out)
    assert len(rows) == total(card, "benign") + total(card, "malignant") > 0
    published = export.loc[rows["img_id"].str.removesuffix(".jpg")].reset_index(drop=True)
    for ours, theirs in (("lesion_id", "lesion_id"), ("sex", "sex"), ("site", "anatom_site_general"),
                         ("age", "age_approx")):
        assert rows[ours].fillna("-").tolist() == published[theirs].fillna("-").tolist(), ours
    assert rows["lesion_id"].notna().all() and rows["age"].notna().any()
    assert any("age, sex, site" in n for n in card["notes"])


# ----------------------------------------------------------------------------- HAM10000 = the study's pool

@pytest.fixture(scope="module")
def ham_pool_raw(fixtures_raw, tmp_path_factory) -> Path:
    """HAM10000_metadata.csv (the training part) + the real test ground truth, an image for each of
    their 11,527 rows; the validation part is missing, as a user may have it."""
    raw = tmp_path_factory.mktemp("ham_pool")
    shutil.copy(fixtures_raw / "ham10000" / "HAM10000_metadata.csv", raw)
    shutil.copy(fixtures_raw / ISIC18_TEST_GT, raw)
    ham = pd.read_csv(raw / "HAM10000_metadata.csv", dtype=str)
    gt = pd.read_csv(raw / "ISIC2018_Task3_Test_GroundTruth.csv", dtype=str)
    fake_images(raw / "HAM10000_images_part_1", ham["image_id"])
    fake_images(raw / "ISIC2018_Task3_Test_Input", gt["image"])
    return raw


@pytest.mark.slow
def test_ham10000_study_is_the_isic2018_pool_resplit_by_lesion(ham_pool_raw, fixtures_raw, tmp_path):
    ham = pd.read_csv(ham_pool_raw / "HAM10000_metadata.csv", dtype=str)
    test_classes = ground_truth_classes(ham_pool_raw / "ISIC2018_Task3_Test_GroundTruth.csv").str.lower()
    pool = pd.concat([ham["dx"], test_classes], ignore_index=True)
    card = prepare("ham10000", ham_pool_raw, tmp_path / "ham_study", labels="study", quiet=True)
    assert total(card, "malignant") == (pool == "mel").sum()
    assert total(card, "benign") == (pool == "nv").sum()
    assert by_reason(card) == {f"study_excluded_{dx}": int((pool == dx).sum())
                               for dx in ("akiec", "bcc", "bkl", "df", "vasc")}
    warning = [n for n in card["notes"] if n.startswith("warning:")]
    assert len(warning) == 1 and "ISIC2018_Task3_Validation_GroundTruth.csv" in warning[0]
    n = sum(sum(c.values()) for c in card["counts"].values())
    for split, target in (("train", 0.75), ("validation", 0.125), ("test", 0.125)):
        assert abs(sum(card["counts"][split].values()) / n - target) < 0.01
    rows = all_rows(tmp_path / "ham_study")
    assert group_overlap(rows, "lesion_id") == {}
    assert rows.groupby("isic2018_split").size().to_dict() == {
        "test": int(test_classes.isin(["mel", "nv"]).sum()), "train": int(ham["dx"].isin(["mel", "nv"]).sum())}
    assert card["split_grouping"] == "grouped" and "grouped by lesion_id" in card["split_policy"]

    # lesion ids of the test images from the ISIC Archive's export of that collection
    with_ids = prepare("ham10000", ham_pool_raw, tmp_path / "ham_ids", labels="study", quiet=True,
                       options={"archive_metadata": [str(fixtures_raw / TEST_EXPORT)]})
    rows = all_rows(tmp_path / "ham_ids")
    assert rows["lesion_id"].notna().all() and rows["age"].notna().mean() > 0.95
    assert group_overlap(rows, "lesion_id") == {}
    assert not any("have no lesion id" in n for n in with_ids["notes"])
    assert any("challenge-2018-task-3-test_metadata" in n and "lesion_id" in n for n in with_ids["notes"])

    # the study's own split ignored lesion_id: asked for by name, it is image-level and leaks lesions
    leaky = prepare("ham10000", ham_pool_raw, tmp_path / "ham_leaky", labels="study", split="ungrouped", quiet=True)
    assert leaky["split_grouping"] == "ungrouped" and "image-level" in leaky["split_policy"]
    assert group_overlap(all_rows(tmp_path / "ham_leaky"), "lesion_id")  # images of one lesion in two splits
    assert leaky["counts"] != card["counts"]


def test_ham10000_complete_ignores_the_pool(fixtures_raw, tmp_path):
    """Under the default definition HAM10000 is HAM10000_metadata.csv as before (99 real images)."""
    card = prepare("ham10000", fixtures_raw / "ham10000", tmp_path / "ham", quiet=True, labels="complete")
    assert sum(sum(c.values()) for c in card["counts"].values()) == 99
    assert card["label_definition"] == "complete" and "isic2018_split" not in all_rows(tmp_path / "ham").columns


# ----------------------------------------------------------------------------- other sources' study definition

def test_pad_ufes_20_study_counts_ack_malignant_whatever_the_policy(fixtures_raw, tmp_path):
    meta = pd.read_csv(fixtures_raw / "pad_ufes_20" / "metadata_head114.csv", dtype=str)
    fake_images(tmp_path / "imgs", [Path(n).stem for n in meta["img_id"]])
    opts = {"metadata": "metadata_head114.csv", "images": [str(tmp_path / "imgs")]}
    study = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "study", labels="study", quiet=True,
                    options=opts)
    assert total(study, "malignant") == meta["diagnostic"].isin(["BCC", "SCC", "MEL", "ACK"]).sum()
    assert study["label_mapping"]["ack"] == "malignant" and study["label_table"]["ACK"] == "malignant"
    assert "ACK" in study["label_definition_note"]
    benign = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "benign", premalignant="benign",
                     quiet=True, options=opts)
    assert total(benign, "malignant") == meta["diagnostic"].isin(["BCC", "SCC", "MEL"]).sum()
    with pytest.raises(UsageError, match="--premalignant benign does not apply to --labels study"):
        prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "x", labels="study", premalignant="benign",
                options=opts)


def test_sd198_study_six_classes_and_benign_undersampled(tmp_path):
    raw = tmp_path / "sd"
    make_sd198_folders(raw, per_class=6)  # BCC and MM malignant, AK, SK, DF
    for k, c in enumerate(["Bowen's_Disease", "Actinic_solar_Damage(Actinic_Keratosis)", "Cutaneous_Horn"]):
        for i in range(6):
            tiny_image(raw / c / f"{k}{i:05d}X.jpg", seed=100 + 10 * k + i)
    study = prepare("sd-198", raw, tmp_path / "study", labels="study", quiet=True)
    assert total(study, "malignant") == 18  # BCC, MM, Bowen's: three of the six classes present
    assert total(study, "benign") == 18  # undersampled to the malignant count, seed 42
    assert [e["count"] for e in study["excluded"] if e["reason"] == "subsampled"] == [6 * 8 - 18 - 18]
    for premalignant in ("actinic_solar_damage(actinic_keratosis)", "cutaneous_horn", "actinic_keratosis"):
        assert study["label_mapping"][premalignant] == "benign"
    assert set(k for k, v in study["label_table"].items() if v == "malignant") == {
        "Basal_Cell_Carcinoma", "Bowen's_Disease", "Malignant_Melanoma", "Lentigo_Maligna_Melanoma",
        "Cutaneous_T-Cell_Lymphoma", "Metastatic_Carcinoma"}
    with pytest.raises(UsageError, match="--balance none contradicts --labels study"):
        prepare("sd-198", raw, tmp_path / "x", labels="study", options={"balance": "none"})


def test_isic2024_study_keeps_every_malignant_and_samples_to_1000(fixtures_raw, tmp_path):
    raw = fixtures_raw / "isic2024"
    opts = {"metadata": "train-metadata_sample50_Ethan-Shapiro.csv"}
    study = prepare("isic2024", raw, tmp_path / "study", labels="study", quiet=True, options=opts)
    assert total(study, "malignant") == 20 and total(study, "benign") == 30  # fewer than 1,000: all kept
    assert "1000" in study["label_definition_note"] and study["label_definition"] == "study"
    assert "70/15/15" in study["split_policy"] and "patient_id" in study["split_policy"]
    with pytest.raises(UsageError, match="--total 30 contradicts --labels study"):
        prepare("isic2024", raw, tmp_path / "x", labels="study", options={**opts, "total": 30})


def test_ddi_study_is_every_image_and_the_card_says_the_371_cannot_be_derived(tmp_path):
    raw = tmp_path / "ddi"
    lines = [",DDI_ID,DDI_file,skin_tone,malignant,disease"]
    for i in range(40):
        lines.append(f"{i},{i + 1},{i + 1:06d}.png,{('12', '34', '56')[i % 3]},{i % 4 == 0},x")
        tiny_image(raw / f"{i + 1:06d}.png", seed=i)
    (raw / "ddi_metadata.csv").write_text("\n".join(lines) + "\n")
    study = prepare("ddi", raw, tmp_path / "study", labels="study", quiet=True)
    complete = prepare("ddi", raw, tmp_path / "complete", quiet=True)
    assert study["counts"] == complete["counts"] and total(study, "malignant") == 10
    assert "371" in study["label_definition_note"] and "cannot be derived" in study["label_definition_note"]


@pytest.mark.parametrize("source, message", [("fitzpatrick17k", "did not evaluate Fitzpatrick17k"),
                                             ("dermamnist", "ham10000 --labels study"),
                                             ("csv", "study_labels")])
def test_sources_without_a_study_definition_refuse_it(tmp_path, capsys, source, message):
    from dermbench.cli.main import main

    (tmp_path / "raw").mkdir()
    (tmp_path / "m.yaml").write_text("labels: {melanoma: malignant}\n")
    extra = ["--mapping", str(tmp_path / "m.yaml")] if source == "csv" else []
    rc = main(["prepare", source, "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
               "--labels", "study", *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{source} has no 'study' label definition" in err and message in err
    assert not (tmp_path / "out").exists()


def test_csv_study_labels_come_from_the_mapping_files_own_table(tmp_path):
    """The study's hospital set: its labels exist only as the user writes them out (no substring rule)."""
    from test_sources import make_private

    raw = make_private(tmp_path)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping.read_text(encoding="utf-8") + "study_labels:\n  melanoma: malignant\n"
                       "  nevo melanocítico: malignant\n  melanose solar: malignant\n  carcinoma basocelular: "
                       "malignant\n  queratose actínica: exclude\n", encoding="utf-8")
    study = prepare("csv", raw, tmp_path / "study", labels="study", quiet=True, options={"mapping": str(mapping)})
    complete = prepare("csv", raw, tmp_path / "complete", quiet=True, options={"mapping": str(mapping)})
    assert total(study, "malignant") == 32 and total(study, "benign") == 0
    assert by_reason(study) == {"study_excluded_queratose_actinica": 8}
    assert total(complete, "malignant") == 16 and complete["label_definition"] == "complete"
    assert "study_labels" in study["label_definition_note"]


# ----------------------------------------------------------------------------- --split ungrouped

def test_split_ungrouped_is_the_studys_image_level_split(fixtures_raw, tmp_path):
    meta = pd.read_csv(fixtures_raw / "pad_ufes_20" / "metadata_head114.csv", dtype=str)
    fake_images(tmp_path / "imgs", [Path(n).stem for n in meta["img_id"]])
    opts = {"metadata": "metadata_head114.csv", "images": [str(tmp_path / "imgs")]}
    card = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "leaky", split="ungrouped", quiet=True,
                   options=opts)
    assert card["split_grouping"] == "ungrouped"
    assert "image-level" in card["split_policy"] and "as the study" in card["split_policy"]
    sizes = {s: sum(c.values()) for s, c in card["counts"].items()}
    assert sizes == {"train": 85, "validation": 14, "test": 15}  # train_test_split: 114 * 0.25 -> 29, then 14/15
    rows = all_rows(tmp_path / "leaky")
    for split in ("train", "validation", "test"):  # stratified by label
        share = (rows.loc[rows["split"] == split, "benign_malignant"] == "malignant").mean()
        assert abs(share - (rows["benign_malignant"] == "malignant").mean()) < 0.1
    again = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "again", split="ungrouped", quiet=True,
                    options=opts)
    assert again["manifest"] == card["manifest"] and all_rows(tmp_path / "again").equals(rows)  # seeded
    grouped = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "grouped", quiet=True, options=opts)
    assert grouped["split_grouping"] == "grouped"
    assert group_overlap(all_rows(tmp_path / "grouped"), "patient_id") == {}


def test_split_ungrouped_refused_for_an_official_split_and_too_few_images(fixtures_raw, tmp_path):
    with pytest.raises(UsageError, match="official train/validation/test split"):
        prepare("isic2018", fixtures_raw / "isic2018_task3", tmp_path / "x", split="ungrouped")
    make_sd198_folders(tmp_path / "sd", per_class=1)
    with pytest.raises(UsageError, match="cannot stratify"):
        prepare("sd-198", tmp_path / "sd", tmp_path / "y", split="ungrouped", options={"balance": "none"})


# ----------------------------------------------------------------------------- run record, report, merge

def _record_cell(runs: Path, dataset: Path, name: str) -> None:
    from dermbench.runs.evaluate import finalize_cell
    from dermbench.runs.record import RunRecorder

    ds = load_dataset(dataset, quiet=True)
    recorder = RunRecorder(runs / "exp" / "probe" / "m" / name / "seed0")
    recorder.begin({"experiment": "exp", "paradigm": "probe", "model": "m", "dataset": str(dataset), "seed": 0})
    rng = np.random.default_rng(0)
    scores = {split: pd.DataFrame({"img_id": ds.split(split)["img_id"],
                                   "p_malignant": np.clip(0.4 * ds.split(split)["label"] + rng.uniform(0, 0.6, len(
                                       ds.split(split))), 0, 1)}) for split in ("validation", "test")}
    finalize_cell(recorder, ds, scores, n_boot=0)


def test_definition_and_leaky_split_reach_the_record_and_the_report(fixtures_raw, tmp_path):
    from dermbench.report.build import ReportOptions, build_report

    meta = pd.read_csv(fixtures_raw / "pad_ufes_20" / "metadata_head114.csv", dtype=str)
    fake_images(tmp_path / "imgs", [Path(n).stem for n in meta["img_id"]])
    opts = {"metadata": "metadata_head114.csv", "images": [str(tmp_path / "imgs")]}
    prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "pad_study", labels="study", split="ungrouped",
            quiet=True, options=opts)
    prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "pad_complete", quiet=True, options=opts)
    runs = tmp_path / "runs"
    _record_cell(runs, tmp_path / "pad_study", "pad_study")
    _record_cell(runs, tmp_path / "pad_complete", "pad_complete")
    metrics = json.loads((runs / "exp/probe/m/pad_study/seed0/metrics.json").read_text())
    assert metrics["dataset"]["label_definition"] == "study"
    assert metrics["dataset"]["split_grouping"] == "ungrouped"

    build_report(runs, tmp_path / "report", ReportOptions(error_pages=False, quiet=True))
    results = pd.read_csv(tmp_path / "report" / "results.csv")
    per_dataset = results.groupby("dataset")[["label_definition", "split_grouping"]].first().to_dict("index")
    assert per_dataset == {"pad_study": {"label_definition": "study", "split_grouping": "ungrouped"},
                           "pad_complete": {"label_definition": "complete", "split_grouping": "grouped"}}
    html = (tmp_path / "report" / "index.html").read_text()
    study_section = html.split('id="ds-pad_study"')[1].split("<h2")[0]
    complete_section = html.split('id="ds-pad_complete"')[1].split("<h2")[0]
    assert "Label definition: study" in study_section and LEAKY_SPLIT_NOTE in study_section
    assert "Label definition: complete" in complete_section and LEAKY_SPLIT_NOTE not in complete_section


def test_merge_refuses_parts_under_different_label_definitions(tmp_path):
    from dermbench.data.merge import merge_datasets

    make_sd198_folders(tmp_path / "sd", per_class=12)
    prepare("sd-198", tmp_path / "sd", tmp_path / "a", labels="study", quiet=True)
    prepare("sd-198", tmp_path / "sd", tmp_path / "b", quiet=True)
    with pytest.raises(MergeError, match="different label definitions .*a: study, b: complete"):
        merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "ab", quiet=True,
                       allow_cross_split_duplicates=True)
    prepare("sd-198", tmp_path / "sd", tmp_path / "c", labels="study", split="ungrouped", quiet=True, seed=1)
    card = merge_datasets([tmp_path / "a", tmp_path / "c"], tmp_path / "ac", quiet=True,
                          allow_cross_split_duplicates=True)
    assert card["label_definition"] == "study" and card["split_grouping"] == "ungrouped"
