"""``dermbench merge``: partitions carried over, collisions renamed, source column, policy check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermbench.data.contract import load_dataset, write_card
from dermbench.data.merge import (SHIPPED_CONFIG, MergeError, load_merge_config, merge_datasets,
                                  run_merge_config)


def make_part(root: Path, name_prefix: str, n: int, seed: int, policy: str = "paper",
              extra_col: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"{name_prefix}{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "images" / name)
        row = {"img_id": name, "benign_malignant": "malignant" if i % 2 else "benign", "patient_id": f"P{i}",
               "split": ("train", "validation", "test")[i % 3]}
        if extra_col:
            row[extra_col] = f"v{i}"
        rows.append(row)
    frame = pd.DataFrame(rows)
    for s in ("train", "validation", "test"):
        frame[frame["split"] == s].drop(columns="split").to_csv(root / f"{s}_metadata.csv", index=False)
    write_card(root, source="test", premalignant_policy=policy, licence="CC0")
    return root


def rows_of(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(out / f"{s}_metadata.csv", dtype=str).assign(split=s)
                      for s in ("train", "validation", "test")], ignore_index=True)


def test_merge_carries_partitions_and_renames_collisions(tmp_path):
    a = make_part(tmp_path / "a", "img", 9, 0, extra_col="fitzpatrick")
    b = make_part(tmp_path / "b", "img", 6, 1, extra_col="site")  # img000..img005 collide with a
    c = make_part(tmp_path / "c", "c", 3, 2)
    card = merge_datasets([a, b, c], tmp_path / "m", quiet=True)
    rows = rows_of(tmp_path / "m")
    assert len(rows) == 18 and rows["img_id"].is_unique
    assert set(rows["source"]) == {"a", "b", "c"}
    assert {"fitzpatrick", "site", "original_img_id"} <= set(rows.columns)  # union of columns
    # partitions carried over
    for part in ("a", "b", "c"):
        src = rows_of(tmp_path / part)
        merged = rows[rows["source"] == part]
        assert dict(zip(src["img_id"], src["split"])) == dict(zip(merged["original_img_id"], merged["split"]))
    # every colliding name renamed in every part, others untouched
    assert "a__img000.jpg" in set(rows["img_id"]) and "b__img000.jpg" in set(rows["img_id"])
    assert "img008.jpg" in set(rows["img_id"]) and "c000.jpg" in set(rows["img_id"])
    assert card["renamed_files"]["count"] == 12
    assert [p["name"] for p in card["parts"]] == ["a", "b", "c"]
    assert card["parts"][0]["fingerprint"] == load_dataset(a, quiet=True).fingerprint
    ds = load_dataset(tmp_path / "m", quiet=True)
    assert not ds.exclusions
    # the renamed file holds the part's own image
    assert (tmp_path / "m" / "images" / "b__img001.jpg").read_bytes() == (b / "images" / "img001.jpg").read_bytes()


def test_merge_is_deterministic_in_part_order(tmp_path):
    a = make_part(tmp_path / "a", "img", 4, 0)
    b = make_part(tmp_path / "b", "img", 4, 1)
    merge_datasets([a, b], tmp_path / "ab", quiet=True)
    merge_datasets([b, a], tmp_path / "ba", quiet=True)
    key = lambda df: sorted(zip(df["img_id"], df["source"], df["split"]))  # noqa: E731
    assert key(rows_of(tmp_path / "ab")) == key(rows_of(tmp_path / "ba"))


def test_merge_refuses_mixed_premalignant(tmp_path):
    a = make_part(tmp_path / "a", "a", 3, 0, policy="paper")
    b = make_part(tmp_path / "b", "b", 3, 1, policy="benign")
    with pytest.raises(MergeError, match="premalignant"):
        merge_datasets([a, b], tmp_path / "m", quiet=True)
    assert not (tmp_path / "m").exists()
    card = merge_datasets([a, b], tmp_path / "m", quiet=True, allow_mixed_premalignant=True)
    assert card["premalignant_policy"] == "mixed"
    assert card["premalignant_policies"] == {"a": "paper", "b": "benign"}


def test_shipped_config_is_the_papers_groups():
    config = load_merge_config(SHIPPED_CONFIG)
    groups = {m.name: m.parts for m in config.merges}
    assert set(groups) == {"merged_clinic", "merged_dermatoscopic", "merged"}
    assert set(groups["merged"]) == set(groups["merged_clinic"]) | set(groups["merged_dermatoscopic"])
    assert not any("ham" in p for p in groups["merged"])


def test_config_merge_with_skip_missing_and_cli(tmp_path, fixtures_raw):
    from dermbench.cli.main import main
    from dermbench.data.sources.prepare import prepare

    root = tmp_path / "datasets"
    prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", root / "pad_ufes_20", quiet=True,
            options={"metadata": "metadata_head114.csv"})
    prepare("isic2024", fixtures_raw / "isic2024", root / "isic2024", quiet=True,
            options={"metadata": "train-metadata_sample50_Ethan-Shapiro.csv"})
    prepare("isic2018", fixtures_raw / "isic2018_task3", root / "isic2018", quiet=True)
    make_part(root / "ddi", "ddi", 6, 3)
    with pytest.raises(MergeError, match="skip-missing"):
        run_merge_config(load_merge_config(SHIPPED_CONFIG), datasets_root=str(root), only=["merged_clinic"],
                         quiet=True)
    rc = main(["merge", "--paper", "--datasets-root", str(root), "--skip-missing", "--only", "merged",
               "merged_dermatoscopic"])
    assert rc == 0
    merged = json.loads((root / "merged" / "dataset.json").read_text())
    assert {p["name"] for p in merged["parts"]} == {"pad_ufes_20", "ddi", "isic2018", "isic2024"}
    assert len(merged["skipped_parts"]) == 2  # hc and sd198
    rows = rows_of(root / "merged")
    assert set(rows["source"]) == {"pad_ufes_20", "ddi", "isic2018", "isic2024"}
    assert main(["merge", "both", "--from", str(root / "ddi"), str(root / "isic2024"),
                 "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "dataset.json").exists()


def test_merge_part_with_symlinked_images(tmp_path):
    """A part prepared with ``--link symlink`` has images/ entries pointing outside images/;
    merging it crashed with 'is not in the subpath' before the fix."""
    a = make_part(tmp_path / "a", "a", 6, 0)
    raw = make_part(tmp_path / "raw", "s", 6, 1)
    s = tmp_path / "s"
    (s / "images").mkdir(parents=True)
    for f in sorted((raw / "images").iterdir()):
        (s / "images" / f.name).symlink_to(f)
    for split in ("train", "validation", "test"):
        (s / f"{split}_metadata.csv").write_bytes((raw / f"{split}_metadata.csv").read_bytes())
    write_card(s, source="test", premalignant_policy="paper", licence="CC0")
    merge_datasets([a, s], tmp_path / "m", quiet=True)
    rows = rows_of(tmp_path / "m")
    assert len(rows) == 12 and set(rows[rows["source"] == "s"]["img_id"]) == {f"s{i:03d}.jpg" for i in range(6)}


def test_merge_refuses_an_image_in_two_parts_under_different_splits(tmp_path, capsys):
    """Partitions carry over, so a part that repeats another part's images under a different split
    (HAM10000 + ISIC 2018, or one set prepared twice with different seeds) made a merged set whose
    test split held training images, silently."""
    from dermbench.cli.main import main

    a = make_part(tmp_path / "a", "img", 6, 0)
    b = tmp_path / "b"
    (b / "images").mkdir(parents=True)
    for f in (a / "images").iterdir():
        (b / "images" / f.name).write_bytes(f.read_bytes())
    rows = rows_of(a)
    rows["split"] = rows["split"].map({"train": "test", "validation": "train", "test": "validation"})
    for s in ("train", "validation", "test"):
        rows[rows["split"] == s].drop(columns="split").to_csv(b / f"{s}_metadata.csv", index=False)
    write_card(b, source="test", premalignant_policy="paper", licence="CC0")
    with pytest.raises(MergeError, match="6 image\\(s\\) appear in two parts in different splits"):
        merge_datasets([a, b], tmp_path / "m", quiet=True)
    assert not (tmp_path / "m").exists()
    assert main(["merge", "m", "--from", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    assert "--allow-cross-split-duplicates" in capsys.readouterr().err
    assert main(["merge", "m", "--from", str(a), str(b), "--out", str(tmp_path / "m"),
                 "--allow-cross-split-duplicates"]) == 0
    # the same images in the same splits of two parts are not leakage: merged (renamed) as before
    merge_datasets([a, make_part(tmp_path / "c", "c", 3, 5)], tmp_path / "ok", quiet=True)


def test_merge_refuses_to_write_over_a_part(tmp_path):
    a = make_part(tmp_path / "a", "a", 3, 0)
    b = make_part(tmp_path / "b", "b", 3, 1)
    with pytest.raises(MergeError, match="would replace the part"):
        merge_datasets([a, b], a, overwrite=True, quiet=True)
    assert len(load_dataset(a, quiet=True).splits["train"]) == 1
