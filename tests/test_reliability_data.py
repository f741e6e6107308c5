"""Issue 14, dataset inputs: reserved metadata column names (item 5) and symlinks (item 6)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synth", n=60, size=32, seed=0, progress=False)


@pytest.fixture
def dataset(synth, tmp_path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(synth, copy)
    return copy


# -- item 5: reserved column names --------------------------------------------------------------------

def add_reserved_columns(root: Path) -> None:
    """Private CSVs often have their own `label` (a diagnosis code) and `path` (where the file was)."""
    for split in ("train", "validation", "test"):
        csv = root / f"{split}_metadata.csv"
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        frame["Label"] = "mel"  # header normalisation makes it 'label'
        frame["path"] = "/old/location/" + frame["img_id"]
        frame.to_csv(csv, index=False)


def test_reserved_column_names_are_renamed_on_read_with_a_note(dataset):
    from dermbench.data.contract import RESERVED_COLUMNS, load_dataset

    add_reserved_columns(dataset)
    ds = load_dataset(dataset, quiet=True)
    test = ds.split("test")
    assert {"label", "path"} <= set(RESERVED_COLUMNS)
    assert set(test["label"]) <= {0, 1} and test["path"].map(lambda p: Path(p).is_file()).all()
    assert (test["original_label"] == "mel").all() and test["original_path"].str.startswith("/old/location/").all()
    notes = [w for w in ds.warnings if "reserved" in w]
    assert notes and "'label' -> 'original_label'" in notes[0] and "'path' -> 'original_path'" in notes[0]


def test_validate_score_and_a_cell_work_with_reserved_column_names(dataset, tmp_path, capsys):
    import test_runner_fake_plugin  # noqa: F401
    from dermbench.cli.main import main
    from dermbench.runner.config import parse_config
    from dermbench.runner.executors import run_cells
    from dermbench.runner.grid import expand_grid

    add_reserved_columns(dataset)
    assert main(["validate", str(dataset)]) == 0
    assert "original_label" in capsys.readouterr().out
    truth = pd.read_csv(dataset / "test_metadata.csv", dtype=str)
    preds = tmp_path / "p.csv"
    pd.DataFrame({"img_id": truth["img_id"], "p_malignant": 0.5}).to_csv(preds, index=False)
    assert main(["score", str(preds), "--truth", str(dataset), "--n-boot", "0"]) == 0
    capsys.readouterr()
    config = parse_config({"experiment": "e", "data_root": str(dataset.parent), "datasets": [dataset.name],
                           "seeds": [1], "n_boot": 0, "imports": ["test_runner_fake_plugin"],
                           "grid": [{"paradigm": "fake", "models": ["m"]}]})
    summary = run_cells(expand_grid(config), tmp_path / "runs")
    assert summary.count("done") == 1, summary.format()


# -- item 6: symlinks ------------------------------------------------------------------------------------

def first_test_image(root: Path) -> tuple[str, Path]:
    img_id = pd.read_csv(root / "test_metadata.csv", dtype=str)["img_id"].iloc[0]
    return img_id, next((root / "images").glob(f"{Path(img_id).stem}.*"))


@pytest.mark.parametrize("check_images", [True, False])
def test_a_dangling_symlink_for_a_listed_image_is_a_missing_image_exclusion(dataset, check_images):
    from dermbench.data.contract import load_dataset

    img_id, path = first_test_image(dataset)
    path.unlink()
    path.symlink_to(dataset / "nowhere" / "gone.jpg")
    ds = load_dataset(dataset, check_images=check_images, quiet=True)
    excluded = {e.img_id: e for e in ds.exclusions}
    assert excluded[img_id].reason == "missing_image" and "symlink" in excluded[img_id].detail
    assert img_id not in set(ds.split("test")["img_id"])


def test_validate_with_a_dangling_symlink_reports_it(dataset, capsys):
    from dermbench.cli.main import main

    img_id, path = first_test_image(dataset)
    path.unlink()
    path.symlink_to("/nonexistent/file.jpg")
    for extra in ([], ["--no-image-check"]):
        assert main(["validate", str(dataset), *extra]) == 0
        out = capsys.readouterr().out
        assert f"img_id={img_id!r}: missing_image" in out and "symlink" in out


def test_symlinks_pointing_outside_images_are_reported(dataset, tmp_path):
    from dermbench.data.contract import load_dataset

    img_id, path = first_test_image(dataset)
    outside = tmp_path / "elsewhere" / path.name
    outside.parent.mkdir()
    shutil.move(path, outside)
    path.symlink_to(outside)
    ds = load_dataset(dataset, quiet=True)
    assert img_id in set(ds.split("test")["img_id"])  # a valid image, used
    notes = [w for w in ds.warnings if "outside images/" in w]
    assert notes and path.name in notes[0] and str(outside) in notes[0]


def test_symlinked_sub_folders_inside_and_outside_images(dataset, tmp_path, monkeypatch):
    """Files reached through a linked folder count as outside images/ exactly when the folder's
    target is; plain files are never resolved one by one (a warm load of 10,000 images would spend
    most of its time in realpath)."""
    from dermbench.data.contract import load_dataset

    test = pd.read_csv(dataset / "test_metadata.csv", dtype=str)
    first, second = test["img_id"].iloc[0], test["img_id"].iloc[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(dataset / "images" / first, elsewhere / first)
    (dataset / "images" / "real_sub").mkdir()
    shutil.move(dataset / "images" / second, dataset / "images" / "real_sub" / second)
    (dataset / "images" / "out_link").symlink_to(elsewhere, target_is_directory=True)
    (dataset / "images" / "in_link").symlink_to(dataset / "images" / "real_sub", target_is_directory=True)
    test.loc[0, "img_id"], test.loc[1, "img_id"] = f"out_link/{first}", f"in_link/{second}"
    test.to_csv(dataset / "test_metadata.csv", index=False)

    resolved: list[str] = []
    real = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: resolved.append(str(p)) or real(p, *a, **k))
    ds = load_dataset(dataset, quiet=True)
    assert {f"out_link/{first}", f"in_link/{second}"} <= set(ds.split("test")["img_id"])
    notes = [w for w in ds.warnings if "outside images/" in w]
    assert len(notes) == 1 and notes[0].startswith("1 file(s)") and f"out_link/{first}" in notes[0]
    assert str(elsewhere / first) in notes[0]
    n_files = sum(len(files) for _d, _s, files in os.walk(dataset / "images", followlinks=True))
    assert len(resolved) < n_files / 4, "plain files are not resolved one by one"


def test_a_symlinked_image_folder_under_raw_is_followed_by_prepare(synth, tmp_path, capsys):
    from dermbench.cli.main import main

    frame = pd.concat([pd.read_csv(synth / f"{s}_metadata.csv", dtype=str) for s in ("train", "validation", "test")])
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"filename": frame["img_id"], "diagnosis": frame["benign_malignant"]}).to_csv(
        raw / "meta.csv", index=False)
    (raw / "images").symlink_to(synth / "images", target_is_directory=True)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"columns": {"img_id": "filename"},
                                       "labels": {"benign": "benign", "malignant": "malignant"}}))
    out = tmp_path / "prepared"
    assert main(["prepare", "csv", "--raw", str(raw), "--out", str(out), "--mapping", str(mapping), "--quiet"]) == 0
    prepared = sum(len(pd.read_csv(out / f"{s}_metadata.csv")) for s in ("train", "validation", "test"))
    assert prepared == len(frame)


def test_a_symlink_loop_under_raw_does_not_hang_prepare(tmp_path):
    from dermbench.data.sources.raw import ImageIndex

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"not read")
    os.symlink(tmp_path, tmp_path / "a" / "loop", target_is_directory=True)
    index = ImageIndex([tmp_path])
    assert [p.name for p in index.by_name["x.jpg"]] == ["x.jpg"]
