"""Provenance reaches the result, and the console tells the truth (issue 15): a run record on a
prepared DDI-like fixture lists the rows ``prepare`` excluded, the report has a datasets section,
error pages label subgroups like the plots, and prepare prints the split it made."""

from __future__ import annotations

import json
import re

import pandas as pd

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm)
from test_audit_similarity import ddi_like_raw


def test_ddi_like_run_record_lists_prepare_exclusions_and_the_report_shows_them(tmp_path, capsys):
    from dermbench.data.contract import load_dataset
    from dermbench.data.sources.prepare import prepare
    from dermbench.report import ReportOptions, build_report
    from dermbench.runner.config import parse_config
    from dermbench.runner.executors import run_cells
    from dermbench.runner.grid import expand_grid
    from dermbench.utils.console import configure

    ddi_like_raw(tmp_path / "raw", n=40, missing=7, copies=0)
    configure()  # as the command line does
    card = prepare("ddi", tmp_path / "raw", tmp_path / "data" / "ddi")
    printed = capsys.readouterr().err
    ds = load_dataset(tmp_path / "data" / "ddi", quiet=True)
    made = {s: len(df) for s, df in ds.splits.items()}

    # console truth: the split line is the split made, the label table counts rows read and kept
    line = next(x for x in printed.splitlines() if x.startswith("split made:"))
    assert line.startswith(f"split made: train {made['train']} / validation {made['validation']} / test {made['test']}")
    assert "target 70/15/15" in printed and card["split_counts"] == made
    false_row = next(x for x in printed.splitlines() if re.match(r"\s+false\s", x))
    read, kept = (int(v) for v in false_row.split()[-2:])
    benign = sum(int((df["label"] == 0).sum()) for df in ds.splits.values())
    assert kept == benign and read == benign + 7  # the 7 rows without an image are read, not kept
    assert card["rows_read"] == 47

    raw = {"experiment": "p", "data_root": str(tmp_path / "data"), "datasets": ["ddi"], "seeds": [1], "n_boot": 20,
           "imports": ["test_runner_fake_plugin"], "grid": [{"paradigm": "fake", "models": ["m"]}]}
    cells = expand_grid(parse_config(raw))
    assert run_cells(cells, tmp_path / "runs").count("done") == 1
    folder = cells[0].spec.path(tmp_path / "runs")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["exclusions"]["prepare"]["by_reason"] == {"missing_image": 7}
    assert metrics["exclusions"]["prepare"]["count"] == 7 and metrics["exclusions"]["prepare"]["rows_read"] == 47
    prov = metrics["dataset"]["provenance"]
    assert prov["source"] == "ddi" and prov["licence"] == "Stanford DDI research use agreement"
    assert prov["label_mapping"] == {"true": "malignant", "false": "benign"}
    assert prov["label_definition"] == "complete" and "target 70/15/15" in prov["split"]["policy"]
    assert prov["split"]["seed"] == 42 and prov["split"]["counts"] == made
    predictions = pd.read_csv(folder / "predictions_test.csv")
    assert "diagnosis" in predictions.columns and predictions["diagnosis"].notna().all()

    report = build_report(tmp_path / "runs", tmp_path / "report", ReportOptions(quiet=True, max_thumbs=50))
    index = report.index.read_text()
    assert 'id="datasets"' in index and "excluded by prepare" in index
    assert "7 of 47 rows read (missing_image 7)" in index and "Stanford DDI research use agreement" in index
    page = next((report.out / "errors").glob("*.html")).read_text()
    # the subgroup labels of the plots (III-IV), never DDI's codes (34); the diagnosis beside each image
    assert re.search(r"fitzpatrick=(I-II|III-IV|V-VI)", page) and not re.search(r"fitzpatrick=(12|34|56)\b", page)
    assert "diagnosis=" in page
