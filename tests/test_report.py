"""Report: tidy results, rankings with explicit ties, summary tables, DeLong, plots, HTML escaping."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm)
from dermbench.metrics import METRIC_NAMES
from dermbench.report import ReportOptions, build_report
from dermbench.report.tables import holm, rank
from dermbench.runner.config import parse_config
from dermbench.runner.executors import run_cells
from dermbench.runner.grid import expand_grid

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A small finished grid: 2 datasets x 3 models (one with an HTML-injection name) x 2 seeds,
    probe-like label-fraction cells, zeroshot-like parse failure rates, and one failed cell."""
    from dermbench.data.synth import make_synthetic_dataset

    base = tmp_path_factory.mktemp("report")
    make_synthetic_dataset(base / "data" / "synth_a", n=80, size=32, seed=0, progress=False)
    make_synthetic_dataset(base / "data" / "synth_b", n=80, size=32, seed=1, progress=False)
    raw = {"experiment": "r", "data_root": str(base / "data"), "datasets": ["synth_a", "synth_b"], "seeds": [1, 2],
           "n_boot": 30, "threshold_policy": "youden", "imports": ["test_runner_fake_plugin"], "grid": [
               {"paradigm": "fake", "models": ["good", "weak", EVIL],
                "model_settings": {"good": {"skill": 3.0}, "weak": {"skill": 0.4}, EVIL: {"skill": 1.0}}},
               # label-fraction points of one configuration (the identity makes them curve points)
               {"paradigm": "fake", "models": ["curve"], "seeds": [1], "settings": {"skill": 0.6, "label_fraction": 0.1}},
               {"paradigm": "fake", "models": ["curve"], "seeds": [1], "settings": {"skill": 0.6, "label_fraction": 0.5}},
               {"paradigm": "fake", "models": ["vlm"], "seeds": [1],
                "settings": {"skill": 0.5, "unparsed_rate": 0.1, "failed_rate": 0.02}},
               {"paradigm": "fake", "models": ["broken"], "seeds": [1], "datasets": ["synth_a"],
                "settings": {"fail": True}},
           ]}
    config = parse_config(raw)
    cells = expand_grid(config)
    summary = run_cells(cells, base / "runs")
    assert summary.count("failed") == 1
    return base / "runs"


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    return build_report(runs, out, ReportOptions(top_k=3, max_thumbs=4, quiet=True))


def test_results_csv_is_tidy_with_ci_bounds(report):
    results = pd.read_csv(report.out / "results.csv")
    n_complete = 2 * 3 * 2 + 2 * 2 + 2  # main models x datasets x seeds, curve, vlm
    assert report.n_cells == n_complete and report.n_incomplete == 1
    assert len(results) == n_complete * 2 * len(METRIC_NAMES)
    assert set(results["split"]) == {"validation", "test"}
    assert {"value", "ci_low", "ci_high", "paradigm", "model", "variant", "dataset", "seed", "entry"} <= set(results.columns)
    auroc = results[results["metric"] == "auroc"]
    assert (auroc["ci_low"] <= auroc["value"] + 1e-12).all() and (auroc["value"] <= auroc["ci_high"] + 1e-12).all()
    assert EVIL in set(results["model"])


def test_summary_tables(report):
    tables = report.out / "tables"
    for metric in METRIC_NAMES:
        assert (tables / f"overall_best_by_{metric}.csv").is_file()
    matrix = pd.read_csv(tables / "metric_matrix__auroc.csv", index_col="dataset")
    assert list(matrix.index) == ["synth_a", "synth_b"] and "fake/good" in matrix.columns
    assert matrix.columns[0] == "fake/good"  # best mean over datasets first
    best = pd.read_csv(tables / "overall_best_by_auroc.csv")
    assert set(best["dataset"]) == {"synth_a", "synth_b"}
    assert (best[best["paradigm"] == "all"]["best"] == "fake/good").all()
    brier = pd.read_csv(tables / "overall_best_by_brier.csv")  # lower is better
    summary = pd.read_csv(report.out / "summary.csv")
    sub = summary[(summary["metric"] == "brier") & (summary["split"] == "test") & (summary["dataset"] == "synth_a")]
    assert brier[(brier["dataset"] == "synth_a") & (brier["paradigm"] == "all")]["value"].iloc[0] == \
        pytest.approx(sub["value"].min())
    md = (report.out / "leaderboards" / "synth_a.md").read_text()
    assert "ties broken by the conservative CI bound" in md
    # 80-image synthetic sets: a small test set, and first place is tied within CI with second (no winner)
    assert "| 1 (tied within CI) | fake/good |" in md and "Small test set" in md and "no winner" in md
    # multi-seed mean ± sd: the markdown leaderboard shows the sd over seeds (ddof=1)
    results = pd.read_csv(report.out / "results.csv")
    good = results[(results["entry"] == "fake/good") & (results["dataset"] == "synth_a")
                   & (results["split"] == "test") & (results["metric"] == "auroc")]["value"]
    assert len(good) == 2 and "sd over runs" in md
    row = next(line for line in md.splitlines() if line.startswith("| 1 (tied within CI) | fake/good |"))
    if good.nunique() == 1:  # both seeds gave the same AUROC: one run, no "sd 0.000 over 2 seeds"
        assert f"| {good.mean():.3f} [" in row and "| — | 1 run (2 seeds identical) |" in row
    else:
        assert f"| {good.mean():.3f} [" in row and f"| {good.std(ddof=1):.3f} | 2 seeds |" in row
    weak = results[(results["entry"] == "fake/weak") & (results["dataset"] == "synth_a")
                   & (results["split"] == "test") & (results["metric"] == "auroc")]["value"]
    row = next(line for line in md.splitlines() if "| fake/weak |" in line)
    assert weak.nunique() == 2 and f"| {weak.mean():.3f} [" in row and f"| {weak.std(ddof=1):.3f} | 2 seeds |" in row


def test_ties_are_broken_by_ci_bound_then_name():
    frame = pd.DataFrame({"entry": ["b", "a", "c", "d"], "value": [0.8, 0.8, 0.8, math.nan],
                          "ci_low": [0.7, 0.6, 0.7, math.nan], "ci_high": [0.9, 0.9, 0.95, math.nan]})
    ranked = rank(frame, "auroc")
    assert list(ranked["entry"]) == ["b", "c", "a", "d"]  # b, c tie on the lower bound -> name
    assert list(ranked["tied"]) == [False, True, True, False]
    lower = rank(frame.assign(value=[0.1, 0.1, 0.2, 0.3]), "brier")  # lower is better, then lower upper bound
    assert list(lower["entry"]) == ["a", "b", "c", "d"]


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([math.nan, 0.2])[0])


def test_delong_table_of_top_models(report):
    delong = pd.read_csv(report.out / "tables" / "delong.csv")
    assert set(delong["dataset"]) == {"synth_a", "synth_b"}
    assert len(delong[delong["dataset"] == "synth_a"]) == 3  # top 3 -> 3 pairs
    assert delong["p_value"].between(0, 1).all() and (delong["p_holm"] >= delong["p_value"] - 1e-12).all()


def test_plots_and_pages(report):
    plots = report.out / "plots"
    for name in ["heatmap__auroc.png", "bars__synth_a.png", "roc__synth_a.png",
                 "zeroshot_parse_failures.png", "label_fraction__synth_a.png"]:
        assert (plots / name).stat().st_size > 1000, name
    # 80-image datasets: ~12 test images, too few for a reliability diagram or a subgroup bar; the page says so
    # (tests/test_report_rendering.py draws both from a larger set)
    assert not (plots / "reliability__synth_a.png").exists() and not list(plots.glob("subgroups__synth_a__*.png"))
    index = report.index.read_text()
    assert "No reliability diagram: fewer than 50 test images" in index
    assert "Subgroup bars are drawn for subgroups of at least 30 test images" in index
    errors = list((report.out / "errors").glob("*.html"))
    assert len(errors) == report.n_cells
    page = next(p for p in errors if "fake__good__synth_a__seed1" in p.name).read_text()
    assert "False benign" in page and "thumbs/" in page
    thumbs = list((report.out / "thumbs").glob("*.jpg"))
    assert thumbs and all((report.out / "thumbs" / t.name).is_file() for t in thumbs)


def test_html_escapes_data_and_needs_no_network(report):
    index = report.index.read_text()
    assert EVIL not in index and "&lt;img src=x onerror=alert(1)&gt;" in index
    for page in (report.out / "errors").glob("*.html"):
        assert EVIL not in page.read_text()
    assert "http://" not in index and "https://" not in index and "<script" not in index
    assert "Failed or partial cells" in index and "fake failure" in index
    for src in pd.Series(index.split('src="')[1:]).str.split('"').str[0]:
        assert (report.out / src).is_file(), src


@pytest.mark.slow
def test_index_renders_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "index.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tempfile.mkdtemp()}", f"--screenshot={shot}", "--window-size=1400,2000",
                    report.index.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1400, 2000)
        colours = im.convert("RGB").resize((50, 50)).getcolors(5000)
    assert colours is not None and len(colours) > 20  # a rendered page, not a blank one


def test_seed_summary_counts_only_seeds_where_the_metric_is_defined():
    from dermbench.report.tables import seed_summary

    # Regression: n_seeds counted every seed, although the mean skipped the undefined one.
    results = pd.DataFrame({"paradigm": "p", "entry": "p/m", "dataset": "d", "split": "test", "metric": "auroc",
                            "seed": [1, 2, 3], "value": [0.8, math.nan, 0.6], "ci_low": [0.7, math.nan, 0.5],
                            "ci_high": [0.9, math.nan, 0.7], "n": 40})
    row = seed_summary(results).iloc[0]
    assert row["value"] == pytest.approx(0.7) and row["n_seeds"] == 2
    assert row["sd"] == pytest.approx(pd.Series([0.8, 0.6]).std(ddof=1))
