"""``dermbench predict`` (issue 13): a completed cell scores new image files, the same way it scored
its own test split; unreadable images are named; saved models load without executing code."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from dermbench.cli.main import main


@pytest.fixture(scope="module")
def probe_cell(tmp_path_factory):
    """A complete probe cell (handcrafted features + logistic regression) on a small synthetic set."""
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec

    root = tmp_path_factory.mktemp("predict")
    dataset = make_synthetic_dataset(root / "synth", n=100, size=48, seed=4, progress=False)
    spec = CellSpec("p", "probe", model="handcrafted", dataset=str(dataset), seed=0, n_boot=20, quiet=True,
                    settings={"head": "logreg", "image_size": 48, "calibration": "platt"}, threshold_policy="youden")
    result = execute_cell(spec, root / "runs")
    assert result.status == "done", result.error
    return result.path, dataset


def _test_images_folder(dataset, folder):
    """The dataset's test images copied into ``folder`` (half in a sub-folder, found recursively),
    plus one corrupt JPEG: the first half of a real one."""
    test = pd.read_csv(dataset / "test_metadata.csv", dtype={"img_id": str})
    (folder / "sub").mkdir(parents=True)
    for i, img_id in enumerate(test["img_id"]):
        shutil.copyfile(dataset / "images" / img_id, folder / ("sub" if i % 2 else "") / img_id)
    whole = (dataset / "images" / test["img_id"].iloc[0]).read_bytes()
    (folder / "corrupt.jpg").write_bytes(whole[: len(whole) // 2])
    return test


def test_predict_a_folder_with_one_corrupt_image(probe_cell, tmp_path, capsys):
    cell, dataset = probe_cell
    test = _test_images_folder(dataset, tmp_path / "photos")
    out = tmp_path / "out" / "predictions.csv"
    assert main(["predict", str(cell), str(tmp_path / "photos"), "--out", str(out)]) == 1  # an image was unreadable
    printed = capsys.readouterr().out
    frame = pd.read_csv(out, dtype={"img_id": str})
    # one row per readable image, the corrupt one named with its reason
    assert len(frame) == len(test)
    assert "corrupt.jpg" in printed and "truncated_image" in printed
    unreadable = pd.read_csv(out.with_name("predictions.unreadable.csv"))
    assert unreadable["image"].str.endswith("corrupt.jpg").tolist() == [True]
    assert unreadable["reason"].tolist() == ["truncated_image"]
    assert "corrupt.jpg" not in set(frame["image"].map(os.path.basename))
    # the decision matches the cell's own test predictions for the same images
    frame["img_id"] = frame["image"].map(os.path.basename)
    own = pd.read_csv(cell / "predictions_test.csv", dtype={"img_id": str})
    joined = frame.merge(own, on="img_id", suffixes=("", "_cell"), validate="one_to_one")
    assert len(joined) == len(test)
    assert (joined["pred"] == joined["pred_cell"]).all()
    assert joined["p_malignant"].to_numpy() == pytest.approx(joined["p_malignant_cell"].to_numpy(), abs=1e-9)
    assert joined["p_uncalibrated"].to_numpy() == pytest.approx(joined["p_uncalibrated_cell"].to_numpy(), abs=1e-9)
    assert set(frame["decision"]) <= {"benign", "malignant"}
    assert ((frame["decision"] == "malignant") == (frame["pred"] == 1)).all()
    # the cell's identity on every row
    from dermbench.runs.record import read_metrics

    metrics = read_metrics(cell)
    row = frame.iloc[0]
    assert row["model"] == "handcrafted" and row["config_label"] == "handcrafted+logreg+cal-platt"
    assert row["train_dataset"] == "synth" and row["dataset_fingerprint"] == metrics["dataset"]["fingerprint"]
    assert row["threshold_policy"] == "youden" and row["calibration"] == "platt"
    assert row["operating_threshold"] == pytest.approx(metrics["threshold"]["value"])
    assert row["weights"] == metrics["provenance"]["weights"]


def test_predict_a_csv_of_paths_and_single_files(probe_cell, tmp_path, capsys):
    cell, dataset = probe_cell
    test = pd.read_csv(dataset / "test_metadata.csv", dtype={"img_id": str}).head(3)
    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": [f"images/{i}" for i in test["img_id"]], "img_id": ["a", "b", "c"]}).to_csv(listing,
                                                                                                    index=False)
    shutil.copytree(dataset / "images", tmp_path / "images")
    out = tmp_path / "p.csv"
    assert main(["predict", str(cell), str(listing), str(dataset / "images" / test["img_id"].iloc[0]),
                 "--out", str(out)]) == 0
    frame = pd.read_csv(out, dtype={"img_id": str})
    assert frame["img_id"].tolist() == ["a", "b", "c", test["img_id"].iloc[0]]
    assert frame["p_malignant"].iloc[0] == pytest.approx(frame["p_malignant"].iloc[3])
    capsys.readouterr()
    assert main(["predict", str(cell), str(tmp_path / "nothing_here")]) == 2
    assert "neither an image file" in capsys.readouterr().err


def test_dangling_links_are_unreadable_and_linked_folders_noted(tmp_path):
    """A dangling symlink in a folder was dropped with no word (it is not a file); it is listed as
    missing, and a symlinked sub-folder (not followed: it may loop) is named in a note."""
    from dermbench.runs.predict import image_inputs

    photos = tmp_path / "photos"
    (photos / "real").mkdir(parents=True)
    (photos / "real" / "a.jpg").write_bytes(b"x")
    (photos / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (photos / "linked").symlink_to(photos / "real", target_is_directory=True)
    images, notes = image_inputs([str(photos)])
    assert sorted(i.img_id for i in images) == ["gone.jpg", "real/a.jpg"]
    assert any("1 symlinked folder(s)" in n and "linked" in n for n in notes), notes


def test_a_cell_whose_head_was_replaced_is_refused(probe_cell, tmp_path, capsys):
    cell, _dataset = probe_cell
    copy = tmp_path / "cell"
    shutil.copytree(cell, copy)
    head = copy / "head.skops"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    assert main(["predict", str(copy), str(copy / "config.yaml"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "not complete" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_a_folder_that_is_not_a_trained_cell_is_one_line_not_a_traceback(tmp_path, capsys):
    """A transfer record (<cell>/transfer/<dataset>/: complete, with a config.yaml) or a complete
    folder whose config.yaml is no cell's is refused with one line naming what to give instead."""
    from dermbench.runs.record import RunRecorder

    transfer = tmp_path / "cell" / "transfer" / "clinic"
    recorder = RunRecorder(transfer)
    recorder.begin({"transfer": {"source_cell": str(tmp_path / "cell")}, "cell": {"paradigm": "probe"}})
    recorder.finish({})
    assert main(["predict", str(transfer), str(transfer / "config.yaml"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "record of a transfer evaluation" in err and str(tmp_path / "cell") in err and "Traceback" not in err

    other = tmp_path / "other"
    recorder = RunRecorder(other)
    recorder.begin({"model": "m"})
    recorder.finish({})
    assert main(["predict", str(other), str(other / "config.yaml"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "does not describe a cell" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_saved_heads_load_only_what_they_recorded(tmp_path):
    """The sha256 recorded with a head must match, and a skops file that needs a type outside the
    trusted list (here a function that would run a shell command) is refused before loading."""
    import hashlib

    import numpy as np
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from dermbench.errors import CacheError
    from dermbench.paradigms.probe.head_models import select_head
    from dermbench.paradigms.probe.head_store import head_bytes, load_head

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 2
    X[:, 0] += y
    for name in ("logreg", "mlp"):
        model = select_head(name, X, y, X, y, options={"mlp_max_epochs": 3}).model
        file, data, record = head_bytes(model)
        (tmp_path / file).write_bytes(data)
        assert np.array_equal(load_head(tmp_path, record).predict_proba(X), model.predict_proba(X))
        with pytest.raises(CacheError, match="sha256"):
            load_head(tmp_path, {**record, "sha256": "0" * 64})

    evil = make_pipeline(FunctionTransformer(os.system))
    data = sio.dumps(evil)
    (tmp_path / "head.skops").write_bytes(data)
    record = {"file": "head.skops", "format": "skops", "sha256": hashlib.sha256(data).hexdigest()}
    with pytest.raises(CacheError, match="does not trust"):
        load_head(tmp_path, record)


@pytest.mark.slow
def test_a_finetune_cell_predicts_and_transfers_with_its_best_checkpoint(tmp_path, capsys):
    """A tiny finetune cell (random-init ResNet-10t, 2 epochs, calibrated): `predict` on its test
    images reproduces its own test predictions from the best checkpoint, and its evaluation on
    another dataset is recorded; a checkpoint that is not the recorded one is refused."""
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics

    dataset = make_synthetic_dataset(tmp_path / "synth", n=60, size=32, seed=6, progress=False)
    other = make_synthetic_dataset(tmp_path / "other", n=50, size=32, seed=7, progress=False)
    spec = CellSpec("f", "finetune", model="timm:resnet10t", dataset=str(dataset), seed=0, n_boot=20, quiet=True,
                    device="cpu", threshold_policy="youden", eval_datasets=[str(other)],
                    settings={"preset": "smoke", "weights": "random", "epochs": 2, "image_size": 32,
                              "calibration": "temperature"})
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", result.error
    assert [t.status for t in result.transfers] == ["done"]
    cell = result.path
    metrics = read_metrics(cell)
    assert metrics["extra"]["checkpoint"]["file"].startswith("work/best_epoch")
    transfer = read_metrics(cell / "transfer" / "other")
    assert transfer["threshold"]["value"] == metrics["threshold"]["value"]
    assert transfer["calibration"]["method"] == "temperature"
    assert transfer["calibration"]["params"] == metrics["calibration"]["params"]  # the cell's calibrator, not refitted

    test = _test_images_folder(dataset, tmp_path / "photos")
    out = tmp_path / "ft.csv"
    assert main(["predict", str(cell), str(tmp_path / "photos"), "--out", str(out), "--device", "cpu"]) == 1
    frame = pd.read_csv(out, dtype={"img_id": str})
    assert len(frame) == len(test)
    frame["img_id"] = frame["image"].map(os.path.basename)
    own = pd.read_csv(cell / "predictions_test.csv", dtype={"img_id": str})
    joined = frame.merge(own, on="img_id", suffixes=("", "_cell"), validate="one_to_one")
    assert (joined["pred"] == joined["pred_cell"]).all()
    assert joined["p_malignant"].to_numpy() == pytest.approx(joined["p_malignant_cell"].to_numpy(), abs=1e-6)
    capsys.readouterr()

    best = cell / metrics["extra"]["checkpoint"]["file"]
    best.write_bytes(best.read_bytes() + b"\0")
    assert main(["predict", str(cell), str(tmp_path / "photos"), "--out", str(out), "--device", "cpu"]) == 2
    assert "not the checkpoint this cell recorded" in capsys.readouterr().err
