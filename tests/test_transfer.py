"""Transfer evaluation (issue 13): a trained cell scored on other datasets without retraining, the
leak check across datasets, the report's transfer matrix and the grid/CLI wiring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from dermbench.data.dataset import LesionDataset
from dermbench.data.leaks import find_leaks, id_namespace


# ---------------------------------------------------------------------------- the leak check
def _frame(ids, *, lesions=None, source=None, original=None):
    df = pd.DataFrame({"img_id": ids, "path": [f"/nowhere/{i}" for i in ids], "label": [0] * len(ids)})
    if lesions is not None:
        df["lesion_id"] = lesions
    if source is not None:
        df["source"] = source
    if original is not None:
        df["original_img_id"] = original
    return df


def _dataset(name, splits, card, tmp_path):
    empty = _frame([])
    frames = {s: splits.get(s, empty) for s in ("train", "validation", "test")}
    return LesionDataset(root=tmp_path / name, name=name, splits=frames, card=card, manifest={},
                         fingerprint=f"fp-{name}-{sorted(card.items())}")


def test_id_namespaces_tie_isic_derived_sources_and_nothing_synthetic():
    assert id_namespace("ham10000") == id_namespace("isic2018") == id_namespace("isic-archive") == "isic"
    assert id_namespace("pad-ufes-20") == "pad-ufes-20"
    assert id_namespace("synthetic") is None and id_namespace("csv") is None and id_namespace("my_clinic") is None


def test_same_isic_image_and_lesion_are_found_across_sources_and_through_a_merge(tmp_path):
    """HAM10000 is ISIC 2018's training set: an ISIC id (with or without extension) or a HAM
    lesion id shared by the two is a leak; ids of a synthetic set say nothing."""
    ham = _dataset("ham10000", {"train": _frame(["ISIC_0000001", "ISIC_0000002"], lesions=["HAM_1", "HAM_2"]),
                                "validation": _frame(["ISIC_0000003"], lesions=["HAM_3"])},
                   {"source": "ham10000"}, tmp_path)
    isic = _dataset("isic2018", {"validation": _frame(["ISIC_0000009"], lesions=["HAM_9"]),
                                 "test": _frame(["isic_0000001.jpg", "ISIC_0000004", "ISIC_0000005"],
                                                lesions=["HAM_1", "HAM_2", "HAM_5"])},
                    {"source": "isic2018"}, tmp_path)
    check = find_leaks(ham, isic, near_duplicates=False)
    found = {(e.split, e.img_id): e.reason for e in check.exclusions}
    assert found == {("test", "isic_0000001.jpg"): "transfer_same_image",
                     ("test", "ISIC_0000004"): "transfer_same_lesion"}
    assert "ham10000/train/ISIC_0000001" in check.exclusions[0].detail
    assert check.record["excluded"]["transfer_same_image"] == 1

    # a merged set: rows traced to their part's source; a renamed file keeps its original id
    merged = _dataset("merged_dermatoscopic",
                      {"test": _frame(["isic2018__ISIC_0000002.jpg", "other.jpg"], source=["isic2018", "pad"],
                                      original=["ISIC_0000002.jpg", "other.jpg"])},
                      {"source": "merge", "parts": [{"name": "isic2018", "source": "isic2018"},
                                                    {"name": "pad", "source": "pad-ufes-20"}]}, tmp_path)
    found = {(e.split, e.img_id): e.reason for e in find_leaks(ham, merged, near_duplicates=False).exclusions}
    assert found == {("test", "isic2018__ISIC_0000002.jpg"): "transfer_same_image"}

    # synthetic sets reuse file names across seeds: never a leak by name
    synth_a = _dataset("a", {"train": _frame(["synth_000001.jpg"])}, {"source": "synthetic"}, tmp_path)
    synth_b = _dataset("b", {"test": _frame(["synth_000001.jpg"])}, {"source": "synthetic"}, tmp_path)
    assert find_leaks(synth_a, synth_b, near_duplicates=False).exclusions == []


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def three_datasets(tmp_path_factory):
    """Dataset A (training) and two targets B and C drawn with other seeds; B's test split gets a
    byte copy of one of A's training images, C's a re-encoded (JPEG quality 70) copy of another."""
    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("transfer")
    a = make_synthetic_dataset(root / "A", n=120, size=48, seed=0, progress=False)
    b = make_synthetic_dataset(root / "B", n=80, size=48, seed=1, progress=False)
    c = make_synthetic_dataset(root / "C", n=80, size=48, seed=2, progress=False)
    train_a = load_dataset(a, quiet=True).split("train")
    test_b = load_dataset(b, quiet=True).split("test")
    test_c = load_dataset(c, quiet=True).split("test")
    shutil.copyfile(train_a["path"].iloc[0], test_b["path"].iloc[2])
    Image.open(train_a["path"].iloc[5]).save(test_c["path"].iloc[1], quality=70)
    planted = {"B": (test_b["img_id"].iloc[2], train_a["img_id"].iloc[0]),
               "C": (test_c["img_id"].iloc[1], train_a["img_id"].iloc[5])}
    return root, planted


def _config(root: Path, tmp_path: Path) -> Path:
    config = {
        "experiment": "xfer", "runs_root": str(tmp_path / "runs"), "data_root": str(root),
        "datasets": ["A", "B", "C"], "seeds": [0], "threshold_policy": "youden", "n_boot": 30, "device": "cpu",
        "grid": [{"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["logreg"], "datasets": ["A"],
                  "eval_datasets": ["B", "C"], "settings": {"image_size": 48}}],
    }
    path = tmp_path / "xfer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_probe_cell_evaluated_on_two_other_datasets(three_datasets, tmp_path, capsys):
    from dermbench.cli.main import main
    from dermbench.report import ReportOptions, build_report
    from dermbench.runs.record import read_metrics

    root, planted = three_datasets
    config = _config(root, tmp_path)
    assert main(["run", str(config)]) == 0
    assert "1 done" in capsys.readouterr().out
    cell = tmp_path / "runs" / "xfer" / "probe" / "handcrafted+logreg" / "A" / "seed0"
    source = read_metrics(cell)

    for target, reason in (("B", "transfer_exact_duplicate"), ("C", "transfer_near_duplicate")):
        folder = cell / "transfer" / target
        metrics = read_metrics(folder)
        # the planted copy is excluded and reported with its reason, and it is not scored
        excluded = pd.read_csv(folder / "exclusions.csv", dtype={"img_id": str})
        leaks = excluded[excluded["reason"].str.startswith("transfer_")]
        assert leaks[["split", "img_id", "reason"]].values.tolist() == [["test", planted[target][0], reason]]
        assert planted[target][1] in leaks["detail"].iloc[0]
        assert metrics["exclusions"]["by_reason"][reason] == 1
        test = pd.read_csv(folder / "predictions_test.csv", dtype={"img_id": str})
        assert planted[target][0] not in set(test["img_id"])
        # the identity names both datasets; the threshold is the training cell's, the oracle beside it
        assert metrics["identity"]["train_dataset"] == "A" and metrics["identity"]["test_dataset"] == target
        assert metrics["identity"]["config_label"] == source["identity"]["config_label"]
        assert metrics["threshold"]["value"] == source["threshold"]["value"]
        assert (test["pred"] == (test["p_malignant"] >= source["threshold"]["value"])).all()
        oracle = metrics["extra"]["transfer"]["oracle"]
        assert oracle["threshold"]["chosen_on"].startswith(f"{target} validation")
        assert oracle["splits"]["test"]["n"] == metrics["splits"]["test"]["n"]
        # CIs (grouped bootstrap by patient) and subgroups, as every run record
        auc = metrics["splits"]["test"]["metrics"]["auroc"]
        assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
        assert metrics["splits"]["test"]["bootstrap"]["unit"] == "group"  # patients/lesions resampled, not images
        assert (folder / "subgroups.csv").is_file()

    # the report: one matrix for the configuration, 1 training row x 3 test columns
    report = tmp_path / "report"
    build_report(tmp_path / "runs", report, ReportOptions(quiet=True, error_pages=False))
    pairs = pd.read_csv(report / "tables" / "transfer_pairs.csv")
    matrix = pairs.pivot_table(index="train_dataset", columns="test_dataset", values="value")
    assert matrix.shape == (1, 3) and list(matrix.columns) == ["A", "B", "C"] and list(matrix.index) == ["A"]
    assert matrix.loc["A", "A"] == pytest.approx(source["splits"]["test"]["metrics"]["auroc"]["value"])
    assert (pairs.set_index("test_dataset").loc[["B", "C"], "excluded_seen_in_training"] == 1).all()
    results = pd.read_csv(report / "results.csv")
    assert {"train_dataset", "test_dataset"} <= set(results.columns)
    auroc = results[(results["metric"] == "auroc") & (results["split"] == "test")]
    assert sorted(zip(auroc["train_dataset"], auroc["test_dataset"])) == [("A", "A"), ("A", "B"), ("A", "C")]
    html = (report / "index.html").read_text()
    assert 'id="transfer"' in html and "trained on \\ tested on" in html
    # leaderboards stay in-domain: B and C have no leaderboard of their own
    assert not (report / "leaderboards" / "B.md").exists()

    # re-running evaluates nothing new
    stamps = {t: (cell / "transfer" / t / "COMPLETE").read_text() for t in ("B", "C")}
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "0 done" in out and "1 skipped" in out
    assert {t: (cell / "transfer" / t / "COMPLETE").read_text() for t in ("B", "C")} == stamps


def test_a_missing_target_is_evaluated_alone_and_a_changed_one_again(three_datasets, tmp_path):
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec

    root, _planted = three_datasets
    spec = CellSpec("x", "probe", model="handcrafted", dataset=str(root / "A"), seed=0, n_boot=20,
                    settings={"head": "logreg", "image_size": 48}, quiet=True, eval_datasets=[str(root / "B")])
    first = execute_cell(spec, tmp_path / "runs")
    assert first.status == "done" and [t.status for t in first.transfers] == ["done"]
    spec.eval_datasets = [str(root / "B"), str(root / "C"), str(root / "A")]  # its own dataset is in-domain
    second = execute_cell(spec, tmp_path / "runs")
    assert second.status == "done" and [(t.target, t.status) for t in second.transfers] == [("B", "skipped"),
                                                                                            ("C", "done")]
    # a target whose content changed is evaluated again
    copy = tmp_path / "B2"
    shutil.copytree(root / "B", copy)
    spec.eval_datasets = [str(copy)]
    assert [t.status for t in execute_cell(spec, tmp_path / "runs").transfers] == ["done"]
    victim = pd.read_csv(copy / "test_metadata.csv")["img_id"].iloc[0]
    Image.open(copy / "images" / victim).rotate(90).save(copy / "images" / victim, quality=95)
    third = execute_cell(spec, tmp_path / "runs")
    assert third.status == "done" and [t.status for t in third.transfers] == ["done"]
    assert [t.status for t in execute_cell(spec, tmp_path / "runs").transfers] == ["skipped"]


def test_a_transfer_that_cannot_run_is_recorded_and_fails_the_cell(three_datasets, tmp_path):
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec

    root, _planted = three_datasets
    broken = tmp_path / "D"
    shutil.copytree(root / "B", broken)
    (broken / "test_metadata.csv").write_text("img_id,benign_malignant\n")  # no test images at all
    spec = CellSpec("x", "probe", model="handcrafted", dataset=str(root / "A"), seed=0, n_boot=20,
                    settings={"head": "logreg", "image_size": 48}, quiet=True, eval_datasets=[str(broken)])
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "failed" and "evaluation on D failed" in result.error
    assert (result.path / "error.txt").is_file() and result.path.name == "D"


def test_eval_datasets_in_the_grid(tmp_path):
    from dermbench.errors import ConfigError
    from dermbench.runner.config import parse_config
    from dermbench.runner.grid import expand_grid

    base = {"experiment": "g", "data_root": str(tmp_path), "datasets": ["A", "B", "C"], "seeds": [1],
            "grid": [{"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["logreg"], "datasets": ["A", "B"],
                      "eval_datasets": "all"},
                     {"paradigm": "zeroshot", "models": ["clip_vit_b32"], "prompt_sets": ["derm_ensemble"],
                      "datasets": ["A"], "eval_datasets": ["C"]}]}
    cells = expand_grid(parse_config(base))
    probe = {c.spec.dataset_name: sorted(Path(t).name for t in c.spec.eval_datasets)
             for c in cells if c.spec.paradigm == "probe"}
    assert probe == {"A": ["B", "C"], "B": ["A", "C"]}  # 'all' but its own
    # a zeroshot cell trains nothing: its eval datasets are datasets it runs on
    assert sorted(c.spec.dataset_name for c in cells if c.spec.paradigm == "zeroshot") == ["A", "C"]
    assert all(not c.spec.eval_datasets for c in cells if c.spec.paradigm == "zeroshot")
    # the folder of a cell does not depend on its evaluation datasets
    assert all("transfer" not in str(c.spec.path("runs")) for c in cells)
    bad = json.loads(json.dumps(base))
    bad["grid"][0]["eval_datasets"] = ["A", "Z"]
    with pytest.raises(ConfigError, match="eval_datasets names 'Z'"):
        parse_config(bad)


def test_synthetic_sets_of_one_modality_keep_the_structure(tmp_path):
    """``modality: clinical`` draws the patients, lesions, labels and splits of the mixed set with
    every image a clinical view (the demo's dermoscopic -> clinical transfer)."""
    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.runs.transfer import dataset_modality

    mixed = load_dataset(make_synthetic_dataset(tmp_path / "m", n=40, size=32, seed=3, progress=False), quiet=True)
    clinical = load_dataset(make_synthetic_dataset(tmp_path / "c", n=40, size=32, seed=3, progress=False,
                                                   modality="clinical"), quiet=True)
    for split in ("train", "validation", "test"):
        a, b = mixed.split(split), clinical.split(split)
        assert a.drop(columns=["modality", "path"]).equals(b.drop(columns=["modality", "path"]))
        assert set(b["modality"]) == {"clinical"}
    assert dataset_modality(mixed) == "mixed" and dataset_modality(clinical) == "clinical"
    assert clinical.card["modality"] == "clinical"


def test_renamed_dataset_folders_keep_their_modality_in_the_report(tmp_path):
    """A dataset folder renamed (or copied) after it was made keeps its card's name ('derm' in a
    folder 'dermoscopy_2024'): the transfer record and the report name datasets by folder, so the
    modality summary must look the modality up by that name, not by the card's."""
    from dermbench.report import ReportOptions, build_report
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics
    from dermbench.data.synth import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "derm", n=60, size=32, seed=1, progress=False, modality="dermoscopic")
    make_synthetic_dataset(tmp_path / "clin", n=60, size=32, seed=2, progress=False, modality="clinical")
    (tmp_path / "derm").rename(tmp_path / "dermoscopy_2024")
    (tmp_path / "clin").rename(tmp_path / "clinic_photos")
    spec = CellSpec("x", "probe", model="handcrafted", dataset=str(tmp_path / "dermoscopy_2024"), seed=0, n_boot=10,
                    settings={"head": "logreg", "image_size": 32}, quiet=True,
                    eval_datasets=[str(tmp_path / "clinic_photos")])
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", result.error
    metrics = read_metrics(result.path / "transfer" / "clinic_photos")
    assert metrics["identity"]["train_dataset"] == "dermoscopy_2024"
    assert metrics["identity"]["test_dataset"] == "clinic_photos"
    build_report(tmp_path / "runs", tmp_path / "report", ReportOptions(quiet=True, error_pages=False))
    pairs = pd.read_csv(tmp_path / "report" / "tables" / "transfer_pairs.csv").set_index("test_dataset")
    assert pairs.loc["clinic_photos", "train_modality"] == "dermoscopic"
    assert pairs.loc["clinic_photos", "test_modality"] == "clinical"
    summary = pd.read_csv(tmp_path / "report" / "tables" / "transfer_by_modality.csv")
    assert summary["direction"].tolist() == ["dermoscopic → clinical"]


def test_eval_datasets_told_apart_by_folder_name_only_are_refused(three_datasets, tmp_path, capsys):
    """Two --eval-dataset folders with one name would write one transfer/<name> record (the second
    overwriting the first, both evaluated again on every run); one named like the training dataset
    would read as its in-domain result. Both are refused before anything runs; one folder written
    two ways is one target, and the training dataset written another way is not a transfer."""
    from dermbench.cli.main import main
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.transfer import transfer_targets

    root, _planted = three_datasets
    (tmp_path / "other").mkdir()
    shutil.copytree(root / "B", tmp_path / "other" / "C")
    shutil.copytree(root / "B", tmp_path / "other" / "A")
    base = ["probe", "--backbone", "handcrafted", "--dataset", str(root / "A"), "--runs", str(tmp_path / "runs"),
            "--n-boot", "10", "--set", "image_size=32", "-q", "--eval-dataset"]
    assert main(base + [str(root / "C"), str(tmp_path / "other" / "C")]) == 2
    assert "has the folder name 'C' of --eval-dataset" in capsys.readouterr().err
    assert main(base + [str(tmp_path / "other" / "A")]) == 2
    assert "has the folder name 'A' of the training dataset" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    spec = CellSpec("x", "probe", "handcrafted", str(root / "A"),
                    eval_datasets=[str(root / "A" / ".." / "A"), str(root / "B")])
    assert transfer_targets(spec) == [str(root / "B")]


def test_report_warns_naming_the_file_of_a_corrupt_transfer_record(three_datasets, tmp_path):
    """Issue 14 item 2 for transfer records: a truncated metrics.json in a complete
    ``transfer/<dataset>`` record leaves that column out of the matrix; the report says so on the
    console, naming the file, as it does for an in-domain cell (it was only in the HTML)."""
    import logging

    from dermbench.report import ReportOptions, build_report
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec

    root, _planted = three_datasets
    spec = CellSpec("x", "probe", model="handcrafted", dataset=str(root / "A"), seed=0, n_boot=10,
                    settings={"head": "logreg", "image_size": 48}, quiet=True, eval_datasets=[str(root / "B")])
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done" and [t.status for t in result.transfers] == ["done"]
    bad = result.path / "transfer" / "B" / "metrics.json"
    bad.write_text(bad.read_text()[:50])

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    logger = logging.getLogger("dermbench")
    handler = Keep()
    logger.addHandler(handler)
    try:
        build_report(tmp_path / "runs", tmp_path / "report", ReportOptions(quiet=True, error_pages=False))
    finally:
        logger.removeHandler(handler)
    assert any(str(bad) in m and "left out" in m for m in messages), messages
    pairs = pd.read_csv(tmp_path / "report" / "tables" / "transfer_pairs.csv")
    assert "B" not in set(pairs["test_dataset"])


def test_dry_run_says_why_a_transfer_record_is_redone(three_datasets, tmp_path, capsys):
    """A transfer record whose target dataset changed is 'stale' and one whose files no longer match
    its COMPLETE is 'corrupt' (it was counted as 'partial'); --dry-run names each with the reason,
    as it does for cells, and the run redoes both."""
    from dermbench.cli.main import main

    root, _planted = three_datasets
    data = tmp_path / "data"
    for name in ("A", "B", "C"):
        shutil.copytree(root / name, data / name)
    config = _config(data, tmp_path)
    assert main(["run", str(config), "-q"]) == 0
    cell = tmp_path / "runs" / "xfer" / "probe" / "handcrafted+logreg" / "A" / "seed0"
    truth = data / "B" / "test_metadata.csv"
    frame = pd.read_csv(truth, dtype=str, keep_default_na=False)
    frame["benign_malignant"] = frame["benign_malignant"].map({"benign": "malignant", "malignant": "benign"})
    frame.to_csv(truth, index=False)
    bad = cell / "transfer" / "C" / "metrics.json"
    bad.write_text(bad.read_text()[:40])
    capsys.readouterr()
    assert main(["run", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "transfer evaluations (eval_datasets): 2; corrupt 1, stale 1" in out
    assert f"{cell / 'transfer' / 'B'}: dataset changed: fingerprint" in out
    assert f"{cell / 'transfer' / 'C'}: {bad} has 40 bytes" in out
    assert main(["run", str(config), "-q"]) == 0
    assert main(["run", str(config), "--dry-run"]) == 0
    assert "transfer evaluations (eval_datasets): 2; complete 2" in capsys.readouterr().out
