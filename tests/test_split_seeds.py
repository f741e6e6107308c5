"""Replication that is real: ``split_seeds`` re-splits the dataset per seed (grouped, same policy),
the report gives mean ± sd over the splits, and DeLong compares the same runs the leaderboard
averages (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm)
from dermbench.runner.config import parse_config
from dermbench.runner.executors import run_cells
from dermbench.runner.grid import cell_state, expand_grid


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory) -> tuple[Path, list]:
    from dermbench.data.synth import make_synthetic_dataset

    base = tmp_path_factory.mktemp("splits")
    make_synthetic_dataset(base / "data" / "synth_a", n=150, size=32, seed=0, progress=False)
    raw = {"experiment": "s", "data_root": str(base / "data"), "datasets": ["synth_a"], "seeds": [1],
           "split_seeds": [0, 1, 2], "n_boot": 30, "imports": ["test_runner_fake_plugin"],
           "grid": [{"paradigm": "fake", "models": ["good", "fair"],
                     "model_settings": {"good": {"skill": 1.5}, "fair": {"skill": 0.8}}}]}
    cells = expand_grid(parse_config(raw))
    summary = run_cells(cells, base / "runs")
    assert summary.count("done") == len(cells) == 6
    return base, cells


def test_each_split_seed_is_its_own_grouped_split(split_runs):
    base, cells = split_runs
    good = [c for c in cells if c.spec.model == "good"]
    assert [c.spec.split_seed for c in good] == [0, 1, 2]
    assert [c.spec.path(base / "runs").parent.name for c in good] == ["synth_a+split0", "synth_a+split1",
                                                                       "synth_a+split2"]
    tests = [frozenset(pd.read_csv(c.spec.path(base / "runs") / "predictions_test.csv")["img_id"]) for c in good]
    assert len(set(tests)) == 3  # three different test sets
    metrics = json.loads((good[1].spec.path(base / "runs") / "metrics.json").read_text())
    folder = json.loads((base / "data" / "synth_a" / "dataset.json").read_text())
    resplit = metrics["dataset"]["provenance"]["split"]["resplit"]
    assert resplit["split_seed"] == 1 and "grouped by patient_id" in resplit["policy"]
    # the record keeps the folder's fingerprint: the cell is complete, not "changed", on the next run
    assert metrics["dataset"]["fingerprint"] == folder["fingerprint"] == resplit["base_fingerprint"]
    assert cell_state(good[1], base / "runs") == "complete"
    # grouped: no patient in two splits of a re-split
    from dermbench.data.contract import load_dataset
    from dermbench.data.resplit import resplit as do_resplit

    again = do_resplit(load_dataset(base / "data" / "synth_a", quiet=True), 1)
    where: dict[str, set[str]] = {}
    for split, frame in again.splits.items():
        for patient in frame["patient_id"]:
            where.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in where.values())
    assert frozenset(again.split("test")["img_id"]) == tests[1]  # the cell ran on exactly this re-split


def test_report_gives_mean_and_sd_over_three_splits_and_delong_over_the_same_runs(split_runs, tmp_path):
    from dermbench.report import ReportOptions, build_report

    base, _cells = split_runs
    report = build_report(base / "runs", tmp_path / "report", ReportOptions(quiet=True, error_pages=False))
    summary = pd.read_csv(report.out / "summary.csv")
    row = summary[(summary["entry"] == "fake/good") & (summary["split"] == "test")
                  & (summary["metric"] == "auroc")].iloc[0]
    results = pd.read_csv(report.out / "results.csv")
    values = results[(results["entry"] == "fake/good") & (results["split"] == "test")
                     & (results["metric"] == "auroc")].sort_values("split_seed")
    assert list(values["split_seed"]) == [0, 1, 2] and values["value"].nunique() == 3
    assert row["n_seeds"] == 3 and row["n_splits"] == 3 and row["runs"] == "3 splits × 1 seed"
    assert row["value"] == pytest.approx(values["value"].mean()) and row["sd"] == pytest.approx(values["value"].std())
    md = (report.out / "leaderboards" / "synth_a.md").read_text()
    assert "3 splits × 1 seed" in md and "sd over runs" in md
    delong = pd.read_csv(report.out / "tables" / "delong.csv")
    pair = delong.iloc[0]
    assert pair["runs"] == 3 and pair["run_keys"] == "split 0 seed 1; split 1 seed 1; split 2 seed 1"
    board = summary[(summary["split"] == "test") & (summary["metric"] == "auroc")].set_index("entry")["value"]
    # the DeLong difference is the leaderboard's difference of means (same runs on both sides)
    sign = 1 if pair["model_a"] == "fake/good" else -1
    assert sign * pair["diff"] == pytest.approx(board["fake/good"] - board["fake/fair"])
    index = report.index.read_text()
    assert "re-split per run" in index and "split seeds 0, 1, 2" in index


def test_each_re_split_run_has_its_own_error_page_with_every_thumbnail(split_runs, tmp_path):
    """Three runs that differ only by split seed are three error pages (not one page written three
    times), each naming its split, and a re-split's test images (from any split of the folder)
    have their thumbnails."""
    from dermbench.report import ReportOptions, build_report

    base, _cells = split_runs
    report = build_report(base / "runs", tmp_path / "report", ReportOptions(quiet=True))
    pages = sorted(p.name for p in (report.out / "errors").glob("*fake__good*"))
    assert len(pages) == 3 and all(f"synth_a+split{k}" in name for k, name in enumerate(pages))
    for k, name in enumerate(pages):
        page = (report.out / "errors" / name).read_text()
        assert f"on synth_a+split{k} (seed 1)" in page and "(no image)" not in page and "<img" in page
    index = report.index.read_text()
    assert all(f"errors/{name}" in index for name in pages) and "synth_a+split2" in index


def test_a_transfer_of_a_re_split_cell_checks_leaks_against_the_split_it_trained_on(tmp_path, monkeypatch):
    """A cell with a split seed trained on its re-split: a target image copied from a source image
    that the re-split moved from test into train is a leak, found and excluded (the folder's own
    split would call that image unseen). The deployment threshold's record note is not a console
    warning about the target dataset."""
    import shutil

    from dermbench.utils import console

    from dermbench.data.contract import load_dataset
    from dermbench.data.resplit import resplit
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics

    a = make_synthetic_dataset(tmp_path / "A", n=120, size=48, seed=0, progress=False)
    b = make_synthetic_dataset(tmp_path / "B", n=60, size=48, seed=1, progress=False)
    own = load_dataset(a, quiet=True)
    split_seed = 1
    moved = resplit(own, split_seed).split("train")
    moved = moved[moved["img_id"].isin(set(own.split("test")["img_id"]))]
    assert len(moved), "the re-split moves some of the folder's test images into train"
    test_b = load_dataset(b, quiet=True).split("test")
    shutil.copyfile(moved["path"].iloc[0], test_b["path"].iloc[0])

    spec = CellSpec("x", "probe", model="handcrafted", dataset=str(a), seed=0, n_boot=20, split_seed=split_seed,
                    settings={"head": "logreg", "image_size": 48}, quiet=True, eval_datasets=[str(b)])
    noted: list[str] = []
    monkeypatch.setattr(console, "note_once", lambda key, message, **k: noted.append(message) or True)
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done" and [t.status for t in result.transfers] == ["done"]
    assert not [m for m in noted if "applied unchanged" in m], noted
    folder = result.path / "transfer" / "B"
    excluded = pd.read_csv(folder / "exclusions.csv", dtype={"img_id": str})
    leaks = excluded[excluded["reason"].str.startswith("transfer_")]
    assert leaks[["split", "img_id", "reason"]].values.tolist() == [
        ["test", test_b["img_id"].iloc[0], "transfer_exact_duplicate"]]
    assert f"A/train/{moved['img_id'].iloc[0]}" in leaks["detail"].iloc[0]
    source = read_metrics(folder)["extra"]["transfer"]["train_dataset"]
    assert source["split_seed"] == split_seed


def test_roc_curves_of_re_split_runs_name_the_split_they_draw(split_runs, tmp_path, monkeypatch):
    """The ROC figure draws one run per configuration: with split seeds its legend says which
    split (its AUROC is that run's, not the leaderboard's mean over splits)."""
    from dermbench.report import plots
    from dermbench.report.collect import collect_runs
    from dermbench.report.tables import results_frame, seed_summary

    base, _cells = split_runs
    cells = collect_runs(base / "runs").cells
    top = plots.top_cells(cells, seed_summary(results_frame(cells)), "synth_a", "auroc", 2)
    assert [(c.split_seed, c.seed) for c in top] == [(0, 1), (0, 1)]
    legends: list[str] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: legends.extend(
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()) or path)
    plots.roc_curves(top, "roc", tmp_path / "roc.png")
    assert len(legends) == 2 and all("split 0, seed 1)" in text for text in legends), legends
