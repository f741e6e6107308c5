"""Report pages built from hand-written run records: hostile names are escaped everywhere, and a
probe run with a single label fraction does not produce an empty curve section."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermbench.data.contract import load_dataset
from dermbench.report import ReportOptions, build_report
from dermbench.runs.evaluate import finalize_cell
from dermbench.runs.record import RunRecorder, cell_dir

from test_contract import make_clean
from test_score_and_evaluate import _scores

EVIL_MODEL = "<script>alert(1)</script>"
EVIL_DATASET = '"><svg onload=alert(2)>'  # a folder name cannot hold "/", so no </script> here
EVIL_ERROR = "<script>alert(3)</script>"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("escape")
    ds = load_dataset(make_clean(base / EVIL_DATASET, n=10), quiet=True)
    runs = base / "runs"
    for model in (EVIL_MODEL, "plain"):
        spec = {"experiment": "x", "paradigm": "probe", "model": model, "variant": "", "dataset": str(ds.root),
                "seed": 1, "settings": {"label_fraction": 1.0}}
        rec = RunRecorder(cell_dir(runs, "x", "probe", model, ds.name, 1))
        rec.begin(spec)
        finalize_cell(rec, ds, {"validation": _scores(ds, "validation"), "test": _scores(ds, "test", 1)},
                      n_boot=20, seed=1, cell=spec, provenance={"weights": "random init"})
    failed = RunRecorder(cell_dir(runs, "x", "probe", "broken", ds.name, 1))
    failed.begin({"experiment": "x", "paradigm": "probe", "model": "broken", "dataset": str(ds.root), "seed": 1})
    failed.fail(RuntimeError(EVIL_ERROR))
    out = base / "report"
    build_report(runs, out, ReportOptions(top_k=2, max_thumbs=2, quiet=True))
    return out


def test_hostile_names_are_escaped_in_index_and_error_pages(report: Path) -> None:
    index = report.joinpath("index.html").read_text()
    pages = [p.read_text() for p in (report / "errors").glob("*.html")]
    assert len(pages) == 2
    for text in [index, *pages]:
        lowered = text.lower()
        assert "<script" not in lowered and "<svg" not in lowered
        assert "http://" not in lowered and "https://" not in lowered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index        # the model name
    assert "&quot;&gt;&lt;svg onload=alert(2)&gt;" in index        # the dataset name
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in index        # the failed cell's error
    assert all("&lt;script&gt;alert(1)&lt;/script&gt;" in p or "plain" in p for p in pages)


def test_single_label_fraction_gives_no_empty_curve_section(report: Path) -> None:
    # Regression: every probe cell records label_fraction 1.0; with one fraction no curve is drawn
    # but index.html still had a "probe curves" link and an empty section.
    index = report.joinpath("index.html").read_text()
    assert "label-fraction curves" not in index and 'href="#curves"' not in index
