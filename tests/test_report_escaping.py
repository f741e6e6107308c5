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
    assert any(f"{quote}&gt;&lt;svg onload=alert(2)&gt;" in index  # the dataset name (either entity for ")
               for quote in ("&quot;", "&#34;"))
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in index        # the failed cell's error
    assert all("&lt;script&gt;alert(1)&lt;/script&gt;" in p or "plain" in p for p in pages)


def test_single_label_fraction_gives_no_empty_curve_section(report: Path) -> None:
    # Regression: every probe cell records label_fraction 1.0; with one fraction no curve is drawn
    # but index.html still had a "probe curves" link and an empty section.
    index = report.joinpath("index.html").read_text()
    assert "label-fraction curves" not in index and 'href="#curves"' not in index


def test_hostile_img_id_and_metadata_are_escaped_through_the_templates(tmp_path: Path) -> None:
    import pandas as pd

    from dermbench.report.collect import CellRecord
    from dermbench.report.error_pages import error_page
    from dermbench.report.html import environment, render, table

    evil_id = '"><img src=x onerror=alert(4)>.jpg'
    evil_site = "<script>alert(5)</script>"
    cell = CellRecord(path=tmp_path / "cell", experiment="x", paradigm="probe", model=EVIL_MODEL, variant="",
                      dataset=EVIL_DATASET, seed=1, metrics={"threshold": {"value": 0.5}},
                      entry=f"probe/{EVIL_MODEL}")
    pred = pd.DataFrame({"img_id": [evil_id, "b.jpg"], "label": [1, 0], "pred": [0, 1],
                         "p_malignant": [0.1, 0.9], "site": [evil_site, "back"]})
    page, counts = error_page(cell, pred, {evil_id: str(tmp_path / "missing.jpg")}, tmp_path / "thumbs", "../thumbs",
                              "../index.html")
    assert counts == {"false_benign": 1, "false_malignant": 1, "n": 2}
    lowered = page.lower()
    assert "<script" not in lowered and "<svg" not in lowered and "<img src=x" not in lowered
    assert "&lt;img src=x onerror=alert(4)&gt;.jpg" in page and "site=&lt;script&gt;alert(5)&lt;/script&gt;" in page
    assert "Errors of probe/&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in render("base.html", title=EVIL_MODEL).lower()
    # a table cell with a link or a tag escapes its text, its address and its colour alike
    frame = pd.DataFrame({"href": ['x" onmouseover="alert(6)'], "paradigm": [EVIL_MODEL]})
    t = table(frame, links={"href": EVIL_MODEL}, tags={"paradigm": lambda v: v})
    rendered = environment().from_string('{% from "macros.html" import table %}{{ table(t) }}').render(t=t)
    assert "<script" not in rendered.lower() and 'onmouseover="' not in rendered
    assert rendered.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3  # link text, tag text, tag colour
