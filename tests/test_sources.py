"""Every dataset source on the real published files (../shared/fixtures/raw) and on fake images
written at the names the metadata lists; DDI, SD-198, DermaMNIST and the csv source on small
fixtures built here from the published formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermbench.data.contract import load_dataset
from dermbench.data.sources import SOURCES
from dermbench.data.sources.prepare import prepare
from dermbench.errors import SourceFormatError
from dermbench.data.splits import group_overlap

FIXTURE_SOURCES = ("ham10000", "isic2018", "isic2024", "pad-ufes-20", "ddi", "sd-198", "fitzpatrick17k",
                   "dermamnist", "csv")


def tiny_image(path: Path, seed: int = 0, size: int = 8) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")


def all_rows(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(out / f"{s}_metadata.csv", dtype=str).assign(split=s)
                      for s in ("train", "validation", "test")], ignore_index=True)


def test_registry_lists_every_source():
    assert set(FIXTURE_SOURCES) <= set(n.lower() for n in SOURCES.names())
    for name in FIXTURE_SOURCES:
        cls = SOURCES.get(name)
        assert cls.name == name


# ----------------------------------------------------------------------------- HAM10000

def test_ham10000_real_images(fixtures_raw, tmp_path, capsys):
    from dermbench.utils.console import configure

    configure()  # as the command line does: the label mapping and exclusions go to stderr
    out = tmp_path / "ham"
    card = prepare("ham10000", fixtures_raw / "ham10000", out)
    ds = load_dataset(out, quiet=True)
    assert sum(len(df) for df in ds.splits.values()) == 99
    assert sum(c["malignant"] for c in ds.counts().values()) == 45
    assert card["label_mapping"]["akiec"] == "malignant"
    assert card["premalignant_policy"] == "paper"
    missing = [e for e in card["excluded"] if e["reason"] == "missing_image"]
    assert missing and missing[0]["count"] == 10015 - 99
    rows = all_rows(out)
    assert group_overlap(rows, "lesion_id") == {}
    assert set(rows["modality"]) == {"dermoscopic"}
    assert {"lesion_id", "diagnosis", "site", "age", "sex", "dx_type"} <= set(rows.columns)
    printed = capsys.readouterr().err
    assert "akiec" in printed and "premalignant" in printed and "malignant" in printed


@pytest.mark.parametrize("metadata", ["HAM10000_metadata.csv", "HAM10000_metadata_dataverse_with_dataset_col.csv"])
def test_ham10000_both_layouts_with_fake_images(fixtures_raw, tmp_path, metadata):
    meta = pd.read_csv(fixtures_raw / "ham10000" / metadata, dtype=str)
    subset = meta[meta["lesion_id"].isin(meta["lesion_id"].drop_duplicates().iloc[:150])]
    images = tmp_path / "imgs" / "HAM10000_images_part_1"
    for i, image_id in enumerate(subset["image_id"]):
        tiny_image(images / f"{image_id}.jpg", seed=i)
    out = tmp_path / "ham"
    card = prepare("ham10000", fixtures_raw / "ham10000", out, quiet=True,
                   options={"metadata": metadata, "images": [str(tmp_path / "imgs")]})
    rows = all_rows(out)
    assert len(rows) == len(subset)
    assert group_overlap(rows, "lesion_id") == {}
    assert rows["img_id"].str.endswith(".jpg").all()
    assert not rows["age"].dropna().str.contains(r"\.").any()  # 80.0 -> 80
    if "dataverse" in metadata:
        assert "dataset" in rows.columns  # extra column of the Dataverse layout kept
    expected_malignant = subset["dx"].isin(["mel", "bcc", "akiec"]).sum()
    assert sum(c["malignant"] for c in card["counts"].values()) == expected_malignant


def test_ham10000_damaged_header_rejected(fixtures_raw, tmp_path):
    bad = fixtures_raw / "ham10000" / "as_found" / "HAM10000_metadata__Shruti-Kashid877_header_typo.csv"
    with pytest.raises(SourceFormatError, match="localization19") as err:
        prepare("ham10000", fixtures_raw / "ham10000", tmp_path / "bad", options={"metadata": str(bad)})
    assert "'localization'" in str(err.value)
    assert not (tmp_path / "bad").exists()


def test_premalignant_policies_on_ham(fixtures_raw, tmp_path):
    base = fixtures_raw / "ham10000"
    benign = prepare("ham10000", base, tmp_path / "b", premalignant="benign", quiet=True)
    excl = prepare("ham10000", base, tmp_path / "e", premalignant="exclude", quiet=True)
    paper = prepare("ham10000", base, tmp_path / "p", quiet=True)
    n = lambda c, lab: sum(v[lab] for v in c["counts"].values())  # noqa: E731
    akiec = (all_rows(tmp_path / "p")["diagnosis"] == "akiec").sum()
    assert akiec > 0
    assert n(benign, "malignant") == n(paper, "malignant") - akiec
    assert n(excl, "malignant") + n(excl, "benign") == 99 - akiec
    assert benign["label_mapping"]["akiec"] == "benign"
    assert any(e["reason"] == "premalignant_excluded" and e["count"] == 327 for e in excl["excluded"])


def test_refuses_to_overwrite(fixtures_raw, tmp_path):
    out = tmp_path / "ham"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare("ham10000", fixtures_raw / "ham10000", out, quiet=True)
    assert (out / "keep.txt").exists()
    prepare("ham10000", fixtures_raw / "ham10000", out, quiet=True, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "dataset.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_refuses_an_out_folder_that_would_replace_the_raw_files(tmp_path):
    """``--out`` = ``--raw`` (or a parent of it) with ``--overwrite`` deleted the published files
    once the new folder was renamed into place (and left symlinked datasets dangling)."""
    raw = tmp_path / "sd"
    make_sd198_folders(raw, per_class=2)
    for out in (raw, tmp_path):
        with pytest.raises(SourceFormatError, match="would replace the raw files"):
            prepare("sd-198", raw, out, quiet=True, overwrite=True)
    assert len(list(raw.rglob("*.jpg"))) == 10


def test_hardlink_mode(tmp_path):
    make_sd198_folders(tmp_path / "sd", per_class=2)
    prepare("sd-198", tmp_path / "sd", tmp_path / "out", link="hardlink", quiet=True)
    files = list((tmp_path / "out" / "images").iterdir())
    assert files and all(f.stat().st_nlink == 2 for f in files)


def test_symlink_mode(tmp_path):
    make_sd198_folders(tmp_path / "sd", per_class=2)
    prepare("sd-198", tmp_path / "sd", tmp_path / "out", link="symlink", quiet=True)
    files = list((tmp_path / "out" / "images").iterdir())
    assert files and all(f.is_symlink() for f in files)


# ----------------------------------------------------------------------------- ISIC 2018

def test_isic2018_official_test_split(fixtures_raw, tmp_path):
    out = tmp_path / "isic18"
    card = prepare("isic2018", fixtures_raw / "isic2018_task3", out, quiet=True)
    assert card["counts"]["test"] == {"benign": 24, "malignant": 18}
    assert card["counts"]["train"] == {"benign": 0, "malignant": 0}
    assert card["split_policy"].startswith("official")
    assert any("Training_GroundTruth" in n for n in card["notes"])
    rows = all_rows(out)
    assert set(rows["diagnosis"]) <= {"mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"}


def test_isic2018_rejects_non_one_hot(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ISIC2018_Task3_Test_GroundTruth.csv").write_text(
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1.0,1.0,0.0,0.0,0.0,0.0,0.0\n")
    with pytest.raises(SourceFormatError, match="one-hot"):
        prepare("isic2018", raw, tmp_path / "out", quiet=True)


# ----------------------------------------------------------------------------- ISIC 2024

def test_isic2024_folder_and_hdf5(fixtures_raw, tmp_path):
    import h5py

    raw = fixtures_raw / "isic2024"
    opts = {"metadata": "train-metadata_sample50_Ethan-Shapiro.csv"}
    folder = prepare("isic2024", raw, tmp_path / "folder", quiet=True, options=opts)
    assert sum(sum(c.values()) for c in folder["counts"].values()) == 50
    assert sum(c["malignant"] for c in folder["counts"].values()) == 20
    rows = all_rows(tmp_path / "folder")
    assert group_overlap(rows, "patient_id") == {}
    assert {"patient_id", "age", "site", "sex", "diagnosis", "copyright_license"} <= set(rows.columns)

    h5 = tmp_path / "train-image.hdf5"
    with h5py.File(h5, "w") as f:
        for p in sorted((raw / "images").glob("*.jpg")):
            f.create_dataset(p.stem, data=np.void(p.read_bytes()))
    from_h5 = prepare("isic2024", raw, tmp_path / "h5", quiet=True, options={**opts, "hdf5": str(h5)})
    assert from_h5["manifest"] == folder["manifest"]  # same JPEG bytes either way
    assert from_h5["counts"] == folder["counts"]


def test_isic2024_paper_subsampling(fixtures_raw, tmp_path):
    card = prepare("isic2024", fixtures_raw / "isic2024", tmp_path / "s", quiet=True,
                   options={"metadata": "train-metadata_sample50_Ethan-Shapiro.csv", "total": 30})
    assert sum(c["malignant"] for c in card["counts"].values()) == 20  # every malignant kept
    assert sum(c["benign"] for c in card["counts"].values()) == 10
    assert [e["count"] for e in card["excluded"] if e["reason"] == "subsampled"] == [20]


# ----------------------------------------------------------------------------- PAD-UFES-20

def test_pad_ufes_20_real_rgba_images_and_unlisted(fixtures_raw, tmp_path):
    out = tmp_path / "pad"
    card = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", out, quiet=True,
                   options={"metadata": "metadata_head114.csv"})
    ds = load_dataset(out, quiet=True)  # RGBA PNGs decode through the contract's one path
    assert not ds.exclusions
    assert sum(len(df) for df in ds.splits.values()) == 7
    assert card["unlisted_images"]["count"] == 14
    assert card["label_mapping"]["ack"] == "malignant"
    rows = all_rows(out)
    assert group_overlap(rows, "patient_id") == {}
    assert {"fitzpatrick", "site", "biopsed", "diagnosis", "lesion_id"} <= set(rows.columns)
    with Image.open(fixtures_raw / "pad_ufes_20" / "images" / rows["img_id"].iloc[0]) as im:
        assert im.mode in ("RGB", "RGBA")


def test_pad_ufes_20_fake_images_for_all_rows(fixtures_raw, tmp_path):
    meta = pd.read_csv(fixtures_raw / "pad_ufes_20" / "metadata_head114.csv", dtype=str)
    for i, name in enumerate(meta["img_id"]):
        tiny_image(tmp_path / "imgs" / "imgs_part_1" / name, seed=i)
    card = prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", tmp_path / "pad", quiet=True, seed=3,
                   options={"metadata": "metadata_head114.csv", "images": [str(tmp_path / "imgs")]})
    rows = all_rows(tmp_path / "pad")
    assert len(rows) == 114
    assert group_overlap(rows, "patient_id") == {}
    malignant = meta["diagnostic"].isin(["BCC", "SCC", "MEL", "ACK"]).sum()
    assert sum(c["malignant"] for c in card["counts"].values()) == malignant
    assert rows["fitzpatrick"].dropna().isin(["1", "2", "3", "4", "5", "6"]).all()


# ----------------------------------------------------------------------------- Fitzpatrick17k

def test_fitzpatrick17k_non_neoplastic_excluded_and_missing_reported(fixtures_raw, tmp_path):
    meta = pd.read_csv(fixtures_raw / "fitzpatrick17k" / "fitzpatrick17k.csv", dtype=str)
    neoplastic = meta[meta["three_partition_label"] != "non-neoplastic"].iloc[:120]
    for i, md5 in enumerate(neoplastic["md5hash"]):
        tiny_image(tmp_path / "downloaded" / f"{md5}.jpg", seed=i)
    card = prepare("fitzpatrick17k", fixtures_raw / "fitzpatrick17k", tmp_path / "f17k", quiet=True,
                   options={"images": [str(tmp_path / "downloaded")]})
    by_reason = {e["reason"]: e["count"] for e in card["excluded"]}
    assert by_reason["excluded_class"] == 12080
    assert by_reason["missing_image"] == 2263 + 2234 - 120
    assert sum(sum(c.values()) for c in card["counts"].values()) == 120
    rows = all_rows(tmp_path / "f17k")
    assert "-1" not in set(rows["fitzpatrick"].dropna())


# ----------------------------------------------------------------------------- DDI

def test_ddi_crlf_and_spreadsheet_booleans(tmp_path):
    raw = tmp_path / "ddi"
    lines = [",DDI_ID,DDI_file,skin_tone,malignant,disease"]
    rng = np.random.default_rng(0)
    for i in range(60):
        tone = ("12", "34", "56")[i % 3]
        malignant = "TRUE" if i % 4 == 0 else ("FALSE" if i % 2 else "False")
        disease = "melanoma-in-situ" if malignant == "TRUE" else "seborrheic-keratosis"
        lines.append(f"{i},{i + 1},{i + 1:06d}.png,{tone},{malignant},{disease}")
        tiny_image(raw / "images" / f"{i + 1:06d}.png", seed=int(rng.integers(1 << 30)))
    (raw / "ddi_metadata.csv").write_bytes("\r\n".join(lines).encode())  # CRLF, no final newline
    card = prepare("ddi", raw, tmp_path / "out", quiet=True)
    assert sum(c["malignant"] for c in card["counts"].values()) == 15
    rows = all_rows(tmp_path / "out")
    assert set(rows["fitzpatrick"]) == {"12", "34", "56"}
    assert "Unnamed: 0" not in rows.columns
    assert "label × fitzpatrick" in card["split_policy"].replace("x", "×") or "fitzpatrick" in card["split_policy"]
    for split in ("train", "validation", "test"):
        assert card["counts"][split]["malignant"] >= 1


def test_ddi_bad_boolean(tmp_path):
    raw = tmp_path / "ddi"
    raw.mkdir()
    (raw / "ddi_metadata.csv").write_text(",DDI_ID,DDI_file,skin_tone,malignant,disease\n0,1,000001.png,12,maybe,x\n")
    with pytest.raises(SourceFormatError, match="True/False"):
        prepare("ddi", raw, tmp_path / "out", quiet=True)


# ----------------------------------------------------------------------------- SD-198

SD_CLASSES = ["Basal_Cell_Carcinoma", "Malignant_Melanoma", "Actinic_Keratosis", "Seborrheic_Keratosis",
              "Dermatofibroma"]


def make_sd198_folders(root: Path, per_class: int = 12) -> None:
    k = 0
    for c in SD_CLASSES:
        for i in range(per_class):
            tiny_image(root / c / f"{i:06d}HB.jpg", seed=k)
            k += 1


def test_sd198_class_folders_balanced(tmp_path):
    make_sd198_folders(tmp_path / "sd")
    card = prepare("sd-198", tmp_path / "sd", tmp_path / "out", quiet=True)
    total = {lab: sum(c[lab] for c in card["counts"].values()) for lab in ("benign", "malignant")}
    assert total == {"malignant": 24, "benign": 24}  # benign undersampled to the malignant count
    assert card["label_mapping"]["actinic_keratosis"] == "benign"  # the study's choice
    rows = all_rows(tmp_path / "out")
    assert rows["img_id"].is_unique and rows["img_id"].str.contains("__").all()
    every = prepare("sd-198", tmp_path / "sd", tmp_path / "all", quiet=True, options={"balance": "none"})
    assert sum(sum(c.values()) for c in every["counts"].values()) == 60


def test_sd198_release_class_names_follow_the_premalignant_policy(tmp_path):
    """The release calls AK ``Actinic_solar_Damage(Actinic_Keratosis)``; before the fix only
    ``Actinic_Keratosis`` was premalignant, so real SD-198 AK (and cutaneous horn) stayed benign
    under --premalignant malignant/exclude."""
    raw = tmp_path / "sd"
    for k, c in enumerate(["Basal_Cell_Carcinoma", "Actinic_solar_Damage(Actinic_Keratosis)", "Cutaneous_Horn",
                           "Actinic_solar_Damage(Solar_Elastosis)"]):
        for i in range(3):
            tiny_image(raw / c / f"{k}{i:05d}HB.jpg", seed=10 * k + i)
    paper = prepare("sd-198", raw, tmp_path / "paper", quiet=True, options={"balance": "none"})
    assert sum(c["malignant"] for c in paper["counts"].values()) == 3  # the study: AK benign
    assert paper["label_mapping"]["actinic_solar_damage(actinic_keratosis)"] == "benign"
    assert any("Malignant_Melanoma" in n for n in paper["notes"])  # absent malignant classes are named
    excl = prepare("sd-198", raw, tmp_path / "excl", quiet=True, premalignant="exclude",
                   options={"balance": "none"})
    assert sum(sum(c.values()) for c in excl["counts"].values()) == 6
    assert [e["count"] for e in excl["excluded"] if e["reason"] == "premalignant_excluded"] == [6]


def test_sd198_release_text_files(tmp_path):
    raw = tmp_path / "sd"
    make_sd198_folders(raw / "images", per_class=4)
    (raw / "classes.txt").write_text("\n".join(f"{i} {c}" for i, c in enumerate(SD_CLASSES, 1)) + "\n")
    imgs, labels = [], []
    k = 1
    for ci, c in enumerate(SD_CLASSES, 1):
        for i in range(4):
            imgs.append(f"{k} {c}/{i:06d}HB.jpg")
            labels.append(f"{k} {ci}")
            k += 1
    (raw / "images.txt").write_text("\n".join(imgs) + "\n")
    (raw / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    card = prepare("sd-198", raw, tmp_path / "out", quiet=True, premalignant="malignant",
                   options={"balance": "none"})
    assert card["notes"][0] == "read the release text files"
    assert sum(c["malignant"] for c in card["counts"].values()) == 12  # BCC + MM + AK under 'malignant'


# ----------------------------------------------------------------------------- DermaMNIST

@pytest.mark.parametrize("size", [28, 64])
def test_dermamnist_npz(tmp_path, size):
    rng = np.random.default_rng(0)
    arrays = {}
    for key, n in (("train", 14), ("val", 7), ("test", 7)):
        arrays[f"{key}_images"] = rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)
        arrays[f"{key}_labels"] = (np.arange(n) % 7).reshape(-1, 1)
    name = "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"
    np.savez(tmp_path / name, **arrays)
    card = prepare("dermamnist", tmp_path, tmp_path / "out", quiet=True, options={"size": size})
    assert card["split_policy"].startswith("official")
    assert sum(card["counts"]["train"].values()) == 14
    # classes 0 (akiec, paper: malignant), 1 (bcc), 4 (mel) are malignant
    assert card["counts"]["train"]["malignant"] == 6
    with Image.open(tmp_path / "out" / "images" / "dermamnist_train_00003.png") as im:
        assert im.size == (size, size)
        assert np.array_equal(np.asarray(im.convert("RGB")), arrays["train_images"][3])


# ----------------------------------------------------------------------------- csv + mapping

def make_private(tmp_path: Path, extra_diagnosis: str | None = None) -> Path:
    raw = tmp_path / "hc"
    diagnoses = ["Melanoma", "nevo melanocítico", "melanose  solar", "Carcinoma basocelular", "queratose actínica"]
    if extra_diagnosis:
        diagnoses.append(extra_diagnosis)
    rows = []
    for i in range(40):
        rows.append({"arquivo": f"img{i:03d}.jpg", "diagnostico": diagnoses[i % len(diagnoses)],
                     "paciente": f"P{i // 2}", "idade": "61.0"})
        tiny_image(raw / "fotos" / f"img{i:03d}.jpg", seed=i)
    pd.DataFrame(rows).to_csv(raw / "hc.csv", index=False)
    (tmp_path / "mapping.yaml").write_text(
        "columns: {img_id: arquivo, diagnosis: diagnostico, patient_id: paciente, age: idade}\n"
        "labels:\n  melanoma: malignant\n  nevo melanocítico: benign\n  melanose solar: benign\n"
        "  carcinoma basocelular: malignant\n  queratose actínica: premalignant\n"
        "premalignant_paper: benign\nlicence: private\nmodality: clinical\n", encoding="utf-8")
    return raw


def test_csv_source_exact_mapping(tmp_path):
    raw = make_private(tmp_path)
    card = prepare("csv", raw, tmp_path / "out", quiet=True, options={"mapping": str(tmp_path / "mapping.yaml")})
    rows = all_rows(tmp_path / "out")
    by_dx = rows.groupby("diagnosis")["benign_malignant"].first().to_dict()
    assert by_dx["melanose  solar"] == "benign" and by_dx["nevo melanocítico"] == "benign"
    assert by_dx["queratose actínica"] == "benign"  # premalignant_paper: benign
    assert group_overlap(rows, "patient_id") == {}
    assert card["licence"] == "private" and set(rows["modality"]) == {"clinical"}
    assert set(rows["age"]) == {"61"}


def test_csv_source_semicolon_latin1_export(tmp_path):
    """A spreadsheet export with ';' separators and latin-1 text (decimal-comma locales) was read
    as one column and refused with a confusing 'mapping names columns the CSV lacks'."""
    raw = tmp_path / "hc"
    lines = ["arquivo;diagnostico;paciente;idade"]
    for i, dx in enumerate(["melanoma", "nevo melanocítico", "melanose solar"] * 4):
        tiny_image(raw / f"h{i}.jpg", seed=i)
        lines.append(f"h{i}.jpg;{dx};P{i // 2};61,0")
    (raw / "hc.csv").write_bytes("\r\n".join(lines).encode("latin-1"))
    (tmp_path / "map.yaml").write_text(
        "columns: {img_id: arquivo, diagnosis: diagnostico, patient_id: paciente}\n"
        "labels: {melanoma: malignant, 'nevo melanocítico': benign, melanose solar: benign}\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="not UTF-8"):
        card = prepare("csv", raw, tmp_path / "out", quiet=True, options={"mapping": str(tmp_path / "map.yaml")})
    rows = all_rows(tmp_path / "out")
    assert len(rows) == 12 and sum(c["malignant"] for c in card["counts"].values()) == 4
    assert set(rows["diagnosis"]) == {"melanoma", "nevo melanocítico", "melanose solar"}
    assert set(rows["idade"]) == {"61,0"}  # a decimal comma stays inside its column


def test_csv_source_windows_1252_export(tmp_path):
    """Excel on Windows writes cp1252: 'Bowen’s disease' has a curly apostrophe (byte 0x92), which
    latin-1 decoded to a control character, so the exact mapping refused a correctly mapped value."""
    raw = tmp_path / "hc"
    lines = ["file,dx"]
    for i, dx in enumerate(["Bowen\u2019s disease", "nevo melanocítico"] * 3):
        tiny_image(raw / f"w{i}.jpg", seed=i)
        lines.append(f"w{i}.jpg,{dx}")
    (raw / "hc.csv").write_bytes("\r\n".join(lines).encode("cp1252"))
    (tmp_path / "map.yaml").write_text("columns: {img_id: file, diagnosis: dx}\n"
                                       "labels: {'Bowen\u2019s disease': malignant, 'nevo melanocítico': benign}\n",
                                       encoding="utf-8")
    with pytest.warns(UserWarning, match="read as cp1252"):
        card = prepare("csv", raw, tmp_path / "out", quiet=True, options={"mapping": str(tmp_path / "map.yaml")})
    assert sum(c["malignant"] for c in card["counts"].values()) == 3


def test_csv_source_refuses_unmapped(tmp_path):
    raw = make_private(tmp_path, extra_diagnosis="melanoma in situ?")
    with pytest.raises(SourceFormatError, match=r"melanoma in situ\?.*\(") as err:
        prepare("csv", raw, tmp_path / "out", quiet=True, options={"mapping": str(tmp_path / "mapping.yaml")})
    assert "substring" in str(err.value)


# ----------------------------------------------------------------------------- CLI

def test_cli_prepare(fixtures_raw, tmp_path, capsys):
    from dermbench.cli.main import main

    out = tmp_path / "pad"
    rc = main(["prepare", "pad-ufes-20", "--raw", str(fixtures_raw / "pad_ufes_20"), "--out", str(out),
               "--metadata", "metadata_head114.csv", "--seed", "7", "--premalignant", "benign"])
    assert rc == 0
    card = json.loads((out / "dataset.json").read_text())
    assert card["premalignant_policy"] == "benign" and card["seed"] == 7
    assert main(["prepare", "pad-ufes-20", "--raw", str(fixtures_raw / "pad_ufes_20"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prepare", "ham1000", "--raw", "x", "--out", "y"]) == 2
    assert "ham10000" in capsys.readouterr().err


@pytest.mark.slow
def test_ham10000_full_metadata_with_10015_fake_images(fixtures_raw, tmp_path):
    """The done-criterion end to end: every row of the real metadata, one tiny image each."""
    meta = pd.read_csv(fixtures_raw / "ham10000" / "HAM10000_metadata.csv", dtype=str)
    rng = np.random.default_rng(0)
    part = tmp_path / "imgs" / "HAM10000_images_part_1"
    part.mkdir(parents=True)
    for image_id in meta["image_id"]:
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(part / f"{image_id}.jpg")
    card = prepare("ham10000", fixtures_raw / "ham10000", tmp_path / "ham", quiet=True,
                   options={"images": [str(tmp_path / "imgs")]})
    rows = all_rows(tmp_path / "ham")
    assert len(rows) == 10015 and not card["excluded"]
    assert group_overlap(rows, "lesion_id") == {}
    assert sum(c["malignant"] for c in card["counts"].values()) == 1954
    for split, target in (("train", 0.75), ("validation", 0.125), ("test", 0.125)):
        assert abs(sum(card["counts"][split].values()) / 10015 - target) < 0.01


def test_isic2018_all_splits_and_lesion_groupings(tmp_path):
    raw = tmp_path / "isic18"
    header = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
    one_hot = {c: ",".join("1.0" if j == i else "0.0" for j in range(7)) for i, c in enumerate(header.split(",")[1:])}
    k = 0
    groupings = ["image,lesion_id,diagnosis_confirm_type"]
    for split, name, n in (("train", "Training", 10), ("validation", "Validation", 4), ("test", "Test", 4)):
        lines = [header]
        for i in range(n):
            image = f"ISIC_{k:07d}"
            cls = ("MEL", "NV", "BCC", "AKIEC", "BKL")[i % 5]
            lines.append(f"{image},{one_hot[cls]}")
            tiny_image(raw / f"ISIC2018_Task3_{name}_Input" / f"{image}.jpg", seed=k)
            if split == "train":
                groupings.append(f"{image},HAM_{i // 2:07d},histopathology")
            k += 1
        (raw / f"ISIC2018_Task3_{name}_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    (raw / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text("\n".join(groupings) + "\n")
    card = prepare("isic2018", raw, tmp_path / "out", quiet=True)
    assert {s: sum(c.values()) for s, c in card["counts"].items()} == {"train": 10, "validation": 4, "test": 4}
    assert card["counts"]["train"]["malignant"] == 6  # MEL, BCC, AKIEC twice each
    train = pd.read_csv(tmp_path / "out" / "train_metadata.csv", dtype=str)
    assert train["lesion_id"].notna().all() and train["lesion_id"].nunique() == 5


def test_relative_out_and_raw_paths(fixtures_raw, tmp_path, monkeypatch):
    from dermbench.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "isic2018", "--raw", str(fixtures_raw / "isic2018_task3"), "--out", "datasets/isic18",
                 "--quiet"]) == 0
    assert load_dataset(tmp_path / "datasets" / "isic18", quiet=True).counts()["test"]["malignant"] == 18
