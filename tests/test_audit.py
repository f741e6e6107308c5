"""``dermbench audit`` catches group overlap and (near) duplicates across splits, and passes a
clean dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermbench.data.audit import audit_datasets, format_report, image_phash


def smooth_image(seed: int, size: int = 96) -> Image.Image:
    """A smooth random colour field: distinct seeds give distinct perceptual hashes."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 255, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def make_dataset(root: Path, rows: list[dict], images: dict[str, Image.Image | bytes]) -> Path:
    (root / "images").mkdir(parents=True)
    for name, img in images.items():
        if isinstance(img, bytes):
            (root / "images" / name).write_bytes(img)
        else:
            img.save(root / "images" / name, quality=92)
    frame = pd.DataFrame(rows)
    for split in ("train", "validation", "test"):
        frame[frame["split"] == split].drop(columns=["split"]).to_csv(root / f"{split}_metadata.csv", index=False)
    return root


def clean_rows(n: int = 30, offset: int = 0):
    rows, images = [], {}
    for i in range(n):
        split = ("train", "train", "train", "validation", "test")[i % 5]
        name = f"img{i + offset:03d}.jpg"
        rows.append({"img_id": name, "benign_malignant": "malignant" if i % 3 == 0 else "benign",
                     "lesion_id": f"L{i + offset}", "patient_id": f"P{i + offset}", "split": split})
        images[name] = smooth_image(i + offset)
    return rows, images


def test_clean_dataset_passes(tmp_path):
    from dermbench.cli.main import main

    rows, images = clean_rows()
    root = make_dataset(tmp_path / "clean", rows, images)
    report = audit_datasets([root])
    assert not report.leakage, format_report(report)
    assert report.summary()["images"] == 30
    assert report.near_duplicates == [] and report.exact_duplicates == []
    assert main(["audit", str(root), "--json", str(tmp_path / "a.json")]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["leakage"] is False and data["perceptual_hash"]["threshold"] == 6


def test_deliberate_leak_is_reported_and_fails(tmp_path, capsys):
    from dermbench.cli.main import main

    rows, images = clean_rows()
    # 1. the same lesion in train and test
    rows.append({"img_id": "leak_lesion.jpg", "benign_malignant": "benign", "lesion_id": "L0", "patient_id": "P0",
                 "split": "test"})
    images["leak_lesion.jpg"] = smooth_image(1000)
    # 2. a resized, re-encoded copy of a training image in validation
    buf = io.BytesIO()
    smooth_image(1).resize((80, 80)).save(buf, format="JPEG", quality=70)
    rows.append({"img_id": "reencoded.jpg", "benign_malignant": "benign", "lesion_id": "L900",
                 "patient_id": "P900", "split": "validation"})
    images["reencoded.jpg"] = buf.getvalue()
    root = make_dataset(tmp_path / "leaky", rows, images)

    report = audit_datasets([root])
    assert report.leakage
    lesion = [g for g in report.group_overlap if g["column"] == "lesion_id"]
    assert lesion and lesion[0]["group"] == "L0" and lesion[0]["splits"] == ["train", "test"]
    near = [d for d in report.near_duplicates if {d["a"]["img_id"], d["b"]["img_id"]} == {"img001.jpg", "reencoded.jpg"}]
    assert near and near[0]["across_splits"] and near[0]["distance"] <= 6
    assert main(["audit", str(root)]) == 1
    text = capsys.readouterr().out
    assert "LEAKAGE FOUND" in text and "L0" in text and "reencoded.jpg" in text


def test_exact_duplicates_across_datasets_and_unreadable(tmp_path):
    rows_a, images_a = clean_rows(10)
    rows_b, images_b = clean_rows(10, offset=50)
    rows_b[0]["split"] = "test"
    images_b[rows_b[0]["img_id"]] = images_a["img001.jpg"]  # same pixels, same encoder -> same bytes
    rows_b.append({"img_id": "broken.jpg", "benign_malignant": "benign", "lesion_id": "X", "patient_id": "X",
                   "split": "train"})
    buf = io.BytesIO()
    smooth_image(7).save(buf, format="JPEG")
    images_b["broken.jpg"] = buf.getvalue()[:200]  # truncated
    a = make_dataset(tmp_path / "a", rows_a, images_a)
    b = make_dataset(tmp_path / "b", rows_b, images_b)
    report = audit_datasets([a, b])
    exact = report.exact_duplicates
    assert len(exact) == 1 and exact[0]["across_datasets"] and exact[0]["across_splits"]
    assert report.leakage
    assert [u["img_id"] for u in report.unreadable] == ["broken.jpg"]
    # same split in two datasets: reported, not leakage
    rows_b[0]["split"] = "train"


def test_duplicate_within_one_split_is_not_leakage(tmp_path):
    rows, images = clean_rows(10)
    rows.append({"img_id": "copy.jpg", "benign_malignant": "benign", "lesion_id": "L77", "patient_id": "P77",
                 "split": "train"})
    images["copy.jpg"] = images["img000.jpg"]
    report = audit_datasets([make_dataset(tmp_path / "d", rows, images)])
    assert len(report.exact_duplicates) == 1 and not report.exact_duplicates[0]["across_splits"]
    assert not report.leakage


def test_phash_is_imagehash_phash(tmp_path):
    """One pHash, from the imagehash library (a dependency): the audit's hash of a file is
    imagehash's hash of the decoded image, and the report names the method."""
    import imagehash

    smooth_image(3).save(tmp_path / "x.png")
    h, reason, _ = image_phash(str(tmp_path / "x.png"))
    assert reason == "" and h == int(str(imagehash.phash(smooth_image(3))), 16)
    rows, images = clean_rows(5)
    report = audit_datasets([make_dataset(tmp_path / "d", rows, images)])
    assert report.phash["method"].startswith("imagehash")


def test_planted_copy_in_the_synthetic_dataset_is_the_only_near_duplicate(tmp_path):
    """Distinct synthetic lesions (small lesions on plain skin, close in pHash) are not flagged;
    a resized, re-encoded copy of a training image planted in test is, as leakage."""
    from dermbench.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "synth", n=80, size=96, seed=5, progress=False)
    train = pd.read_csv(root / "train_metadata.csv")
    source = train.iloc[0]
    Image.open(root / "images" / source["img_id"]).resize((80, 80)).save(root / "images" / "planted.jpg", quality=70)
    test = pd.read_csv(root / "test_metadata.csv")
    planted = {**source.to_dict(), "img_id": "planted.jpg", "patient_id": "SPX", "lesion_id": "SLX"}
    pd.concat([test, pd.DataFrame([planted])]).to_csv(root / "test_metadata.csv", index=False)
    report = audit_datasets([root])
    pairs = [{d["a"]["img_id"], d["b"]["img_id"]} for d in report.near_duplicates]
    assert pairs == [{source["img_id"], "planted.jpg"}], report.near_duplicates
    assert report.near_duplicates[0]["across_splits"] and report.leakage


def test_exact_duplicates_found_through_a_symlinked_dataset_path(tmp_path):
    """A dataset reached through a symlinked folder (a datasets/ link, /tmp on macOS) must still
    have its sha256 manifest matched; before the fix every hash came back empty and exact
    duplicates across splits went unreported."""
    rows, images = clean_rows(10)
    rows.append({"img_id": "copy.jpg", "benign_malignant": "benign", "lesion_id": "L77", "patient_id": "P77",
                 "split": "test"})
    images["copy.jpg"] = images["img000.jpg"]  # img000 is in train
    make_dataset(tmp_path / "real" / "d", rows, images)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    report = audit_datasets([tmp_path / "link" / "d"], near_duplicates=False)
    assert len(report.exact_duplicates) == 1 and report.exact_duplicates[0]["across_splits"]
    assert report.leakage


def test_colour_layout_separates_distinct_small_lesions_but_not_a_copy(tmp_path):
    """pHash of a small lesion on plain skin sees mostly the skin: two different lesions can sit
    within the Hamming threshold. The colour-layout confirmation keeps them apart, while a
    re-lit, resized and re-encoded copy still matches."""
    import io

    from PIL import Image, ImageDraw, ImageEnhance

    from dermbench.data.audit import colour_layout

    def lesion(skin, blob, box):
        img = Image.new("RGB", (96, 96), skin)
        ImageDraw.Draw(img).ellipse(box, fill=blob)
        return img

    a = lesion((200, 150, 130), (90, 60, 40), (38, 40, 60, 58))
    b = lesion((150, 100, 80), (60, 40, 30), (30, 34, 52, 50))
    buf = io.BytesIO()
    ImageEnhance.Brightness(a).enhance(1.1).resize((80, 80)).save(buf, "JPEG", quality=70)
    copy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    diff = lambda x, y: float(np.abs(colour_layout(x) - colour_layout(y)).mean())  # noqa: E731
    assert diff(a, copy) < 3.0 < diff(a, b)


def test_near_pair_search_matches_every_pair_and_a_warm_audit_does_not_repeat_it(tmp_path, monkeypatch):
    """The blocked upper-triangle search finds exactly the pairs a full comparison finds; a second
    audit of unchanged files takes its pairs from the cache (keyed by the hashes and threshold)
    and lists the same near duplicates, and a changed threshold searches again."""
    from dermbench.data import audit as audit_module

    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, size=700, dtype=np.uint64)
    hashes[rng.choice(700, 60, replace=False)] = hashes[:60] ^ np.uint64(0b101)  # pairs at distance 2
    full = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    want = {(int(i), int(j), int(full[i, j])) for i, j in zip(*np.nonzero(full <= 6)) if i < j}
    assert set(audit_module._near_pairs(hashes, 6, block=64)) == want and len(want) >= 50

    monkeypatch.setenv("DERMBENCH_CACHE", str(tmp_path / "cache"))
    rows, images = clean_rows(20)
    rows.append({"img_id": "again.jpg", "benign_malignant": "benign", "lesion_id": "L99", "patient_id": "P99",
                 "split": "test"})
    buf = io.BytesIO()
    images["img000.jpg"].resize((80, 80)).save(buf, "JPEG", quality=70)  # img000 is in train
    images["again.jpg"] = buf.getvalue()
    root = make_dataset(tmp_path / "d", rows, images)
    cold = audit_datasets([root])
    searched = []
    real = audit_module._near_pairs
    monkeypatch.setattr(audit_module, "_near_pairs", lambda *a, **k: searched.append(a) or real(*a, **k))
    warm = audit_datasets([root])
    assert not searched and warm.near_duplicates == cold.near_duplicates and len(cold.near_duplicates) == 1
    assert audit_datasets([root], phash_threshold=5).near_duplicates == cold.near_duplicates and searched
