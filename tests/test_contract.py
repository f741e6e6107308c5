"""The dataset contract: every bad case is excluded with its reason, or an error under strict."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermbench.data.card import read_card
from dermbench.data.contract import load_dataset, write_card
from dermbench.errors import DatasetError


def _jpeg(path: Path, seed: int = 0, size=(24, 16), mode="RGB") -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "CMYK":
        img.convert("CMYK").save(path, "JPEG")
    else:
        img.convert(mode).save(path)


def _write_split(root: Path, split: str, rows: list[dict], newline: str = "\n") -> None:
    df = pd.DataFrame(rows)
    (root / f"{split}_metadata.csv").write_text(df.to_csv(index=False, lineterminator=newline))


def make_clean(root: Path, n: int = 6) -> Path:
    for split in ("train", "validation", "test"):
        rows = []
        for i in range(n):
            name = f"{split}_{i}.jpg"
            _jpeg(root / "images" / name, seed=hash((split, i)) % 1000)
            rows.append({"img_id": name, "benign_malignant": "malignant" if i % 2 else "benign",
                         "patient_id": f"{split}_p{i // 2}", "fitzpatrick": "III"})
        _write_split(root, split, rows)
    return root


@pytest.fixture()
def bad_dataset(tmp_path: Path) -> Path:
    """A dataset folder with every bad case the contract names."""
    root = tmp_path / "bad"
    img = root / "images"
    img.mkdir(parents=True)
    _jpeg(img / "ok1.jpg", 1)
    _jpeg(img / "ok2.jpg", 2)
    _jpeg(img / "stem_only.png", 3)                    # img_id given without extension
    _jpeg(img / "both.jpg", 4)                          # two candidates: .jpg wins deterministically
    _jpeg(img / "both.png", 5)
    Image.fromarray(np.zeros((10, 10, 4), np.uint8), "RGBA").save(img / "rgba.png")
    Image.fromarray((np.arange(100, dtype=np.uint16).reshape(10, 10) * 600).astype(np.uint16)).save(img / "gray16.png")
    Image.new("P", (10, 10)).save(img / "palette.png")
    Image.new("L", (10, 10), 128).save(img / "gray.jpg")
    _jpeg(img / "cmyk.jpg", 6, mode="CMYK")
    # a truncated JPEG and a file with garbage bytes
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    (img / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (img / "garbage.jpg").write_bytes(b"this is not an image at all")
    Image.new("RGB", (8, 8)).save(img / "bitmap.bmp")
    (root.parent / "outside.jpg").write_bytes(b"")
    _write_split(root, "train", [
        {"img_id": "ok1.jpg", "benign_malignant": "Benign"},            # case-insensitive label
        {"img_id": "stem_only", "benign_malignant": " MALIGNANT "},
        {"img_id": "both", "benign_malignant": "benign"},
        {"img_id": "rgba.png", "benign_malignant": "benign"},
        {"img_id": "gray16.png", "benign_malignant": "malignant"},
        {"img_id": "palette.png", "benign_malignant": "benign"},
        {"img_id": "gray.jpg", "benign_malignant": "malignant"},
        {"img_id": "cmyk.jpg", "benign_malignant": "benign"},
        {"img_id": "missing_file.jpg", "benign_malignant": "benign"},   # missing image
        {"img_id": "truncated.jpg", "benign_malignant": "benign"},      # truncated
        {"img_id": "garbage.jpg", "benign_malignant": "malignant"},     # corrupt
        {"img_id": "bitmap.bmp", "benign_malignant": "benign"},         # unsupported format
        {"img_id": "../outside.jpg", "benign_malignant": "benign"},     # escapes images/
        {"img_id": "/etc/passwd", "benign_malignant": "benign"},        # absolute path
        {"img_id": "ok2.jpg", "benign_malignant": ""},                  # missing label
        {"img_id": "ok2.jpg", "benign_malignant": "suspicious"},        # unknown label
        {"img_id": "", "benign_malignant": "benign"},                   # missing id
    ], newline="\r\n")
    _write_split(root, "validation", [
        {"img_id": "ok1.jpg", "benign_malignant": "benign"},            # duplicate across splits
        {"img_id": "ok2.jpg", "benign_malignant": "malignant"},
    ])
    _write_split(root, "test", [
        {"img_id": "ok2", "benign_malignant": "malignant"},             # same file as validation's ok2.jpg
    ])
    return root


def test_every_bad_case_is_reported_by_name(bad_dataset: Path) -> None:
    ds = load_dataset(bad_dataset, quiet=True)
    reasons = {(e.split, e.img_id): e.reason for e in ds.exclusions}
    assert reasons[("train", "missing_file.jpg")] == "missing_image"
    assert reasons[("train", "truncated.jpg")] == "truncated_image"
    assert reasons[("train", "garbage.jpg")] == "unreadable_image"
    assert reasons[("train", "bitmap.bmp")] == "unsupported_format"
    assert reasons[("train", "../outside.jpg")] == "unsafe_img_id"
    assert reasons[("train", "/etc/passwd")] == "unsafe_img_id"
    assert reasons[("train", "")] == "missing_img_id"
    assert reasons[("validation", "ok1.jpg")] == "duplicate_img_id"
    assert reasons[("test", "ok2")] == "duplicate_img_id"
    by_reason = sorted(e.reason for e in ds.exclusions if e.img_id == "ok2.jpg" and e.split == "train")
    assert by_reason == ["missing_label", "unknown_label"]
    # line numbers point at the CSV line (header = 1)
    line = {e.img_id: e.row for e in ds.exclusions if e.split == "train"}
    assert line["missing_file.jpg"] == 10
    assert len(ds.exclusions) == 11

    train = ds.split("train")
    assert list(train["img_id"]) == ["ok1.jpg", "stem_only", "both", "rgba.png", "gray16.png",
                                     "palette.png", "gray.jpg", "cmyk.jpg"]
    assert list(train["label"]) == [0, 1, 0, 0, 1, 0, 1, 0]
    assert Path(train.loc[train.img_id == "both", "path"].item()).name == "both.jpg"
    assert Path(train.loc[train.img_id == "stem_only", "path"].item()).name == "stem_only.png"
    assert list(ds.split("validation")["img_id"]) == ["ok2.jpg"]
    assert len(ds.split("test")) == 0
    assert any("test" in w and "no usable rows" in w for w in ds.warnings)
    assert set(ds.exclusion_frame().columns) == {"split", "row", "img_id", "reason", "detail"}


def test_strict_turns_exclusions_into_an_error(bad_dataset: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(bad_dataset, strict=True, quiet=True)
    msg = str(err.value)
    assert "11 row(s)" in msg and "truncated_image" in msg and "unsafe_img_id" in msg


def test_wrong_header_names_the_columns(tmp_path: Path) -> None:
    root = make_clean(tmp_path / "d")
    (root / "test_metadata.csv").write_text("image,label\na.jpg,benign\n")
    with pytest.raises(DatasetError, match=r"lacks required column\(s\) \['img_id', 'benign_malignant'\]"):
        load_dataset(root, quiet=True)


def test_missing_split_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope", quiet=True)
    root = make_clean(tmp_path / "d")
    (root / "validation_metadata.csv").unlink()
    with pytest.raises(DatasetError, match="validation_metadata.csv"):
        load_dataset(root, quiet=True)


def test_non_utf8_csv_is_read_and_reported(tmp_path: Path) -> None:
    root = make_clean(tmp_path / "d")
    df = pd.read_csv(root / "train_metadata.csv")
    df["site"] = "pé"
    (root / "train_metadata.csv").write_bytes(df.to_csv(index=False).encode("latin-1"))
    ds = load_dataset(root, quiet=True)
    assert ds.split("train")["site"].iloc[0] == "pé"
    assert any("not UTF-8" in w for w in ds.warnings)


def test_fingerprint_is_content_based(tmp_path: Path) -> None:
    a = make_clean(tmp_path / "a")
    fp1 = load_dataset(a, quiet=True).fingerprint
    assert load_dataset(a, quiet=True, check_images=False).fingerprint == fp1
    # a copy elsewhere has the same fingerprint
    import shutil

    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert load_dataset(b, quiet=True).fingerprint == fp1
    # one changed image changes it
    _jpeg(b / "images" / "test_0.jpg", seed=999)
    assert load_dataset(b, quiet=True).fingerprint != fp1


def test_card_counts_manifest_and_group_ids(tmp_path: Path) -> None:
    root = make_clean(tmp_path / "d")
    card = write_card(root, source="unit-test", licence="CC0", label_mapping={"x": "benign"})
    assert read_card(root)["source"] == "unit-test"
    assert card["counts"]["train"] == {"benign": 3, "malignant": 3}
    assert len(card["manifest"]) == 18 and all(len(v) == 64 for v in card["manifest"].values())
    ds = load_dataset(root, quiet=True)
    assert ds.fingerprint == card["fingerprint"]
    assert ds.group_ids("train").nunique() == 3
    # a changed image is flagged against the manifest
    _jpeg(root / "images" / "train_0.jpg", seed=12345)
    assert any("differ from the sha256 manifest" in w for w in load_dataset(root, quiet=True).warnings)


def test_validate_cli_strict_exit_codes(bad_dataset: Path, tmp_path: Path) -> None:
    clean = make_clean(tmp_path / "clean")
    ok = subprocess.run([sys.executable, "-m", "dermbench", "validate", str(clean), "--strict"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "dermbench", "validate", str(bad_dataset), "--strict",
                          "--json", str(tmp_path / "v.json")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "truncated_image" in bad.stdout
    assert len(json.loads((tmp_path / "v.json").read_text())[str(bad_dataset)]["exclusions"]) == 11


def test_image_checks_are_memoised_but_changed_files_rechecked(tmp_path: Path, monkeypatch) -> None:
    from dermbench.data import images as imgio

    root = make_clean(tmp_path / "d")
    load_dataset(root, quiet=True)
    calls: list[str] = []
    real = imgio.check_image
    monkeypatch.setattr(imgio, "check_image", lambda p: (calls.append(p), real(p))[1])
    assert len(load_dataset(root, quiet=True).exclusions) == 0
    assert calls == []  # nothing decoded again
    victim = root / "images" / "test_1.jpg"
    victim.write_bytes(victim.read_bytes()[:200])  # now truncated
    ds = load_dataset(root, quiet=True)
    assert [Path(p).name for p in calls] == ["test_1.jpg"]
    assert [(e.img_id, e.reason) for e in ds.exclusions] == [("test_1.jpg", "truncated_image")]


def test_fingerprint_does_not_depend_on_the_image_check(bad_dataset: Path) -> None:
    """Runs load with the decode check, the card / merge / audit / ``dataset_fingerprint`` without;
    with an unreadable image present the two fingerprints differed before the fix, so one dataset
    had two identities (and two image-cache keys)."""
    from dermbench.data.contract import dataset_fingerprint

    checked = load_dataset(bad_dataset, quiet=True)
    assert any(e.reason == "truncated_image" for e in checked.exclusions)
    unchecked = load_dataset(bad_dataset, quiet=True, check_images=False)
    assert checked.fingerprint == unchecked.fingerprint == dataset_fingerprint(bad_dataset)
    assert "truncated.jpg" in checked.manifest  # referenced by a CSV, hashed, though not usable


def test_damaged_card_is_a_clear_error_and_write_card_repairs_it(tmp_path: Path, capsys) -> None:
    """The error told users to run ``validate --write-card``, which then crashed on the same card
    (and the CLI showed a traceback: the error was a bare ValueError)."""
    from dermbench.cli.main import main

    root = make_clean(tmp_path / "d")
    (root / "dataset.json").write_text("{broken")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(root, quiet=True)
    assert main(["validate", str(root)]) == 2
    assert "--write-card" in capsys.readouterr().err
    assert main(["validate", str(root), "--write-card"]) == 0
    assert read_card(root)["fingerprint"] == load_dataset(root, quiet=True).fingerprint


def test_fingerprint_sees_a_same_size_file_with_its_old_mtime(tmp_path: Path) -> None:
    """``cp -p`` / ``rsync -a`` put a different file in place with the old size and mtime; the
    sha256 memo keyed on (size, mtime) kept the old hash, so the fingerprint and every cache
    keyed on it (image cache, embeddings) stayed stale."""
    import os

    root = make_clean(tmp_path / "d")
    target = root / "images" / "train_0.jpg"
    fp1 = load_dataset(root, quiet=True).fingerprint
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # same size, different pixels
    replacement = tmp_path / "new.jpg"
    replacement.write_bytes(bytes(data))
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, target)
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    assert load_dataset(root, quiet=True, check_images=False).fingerprint != fp1
