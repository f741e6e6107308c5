"""The report has one row per configuration: curve points (label fractions, k-shot) are drawn as
curves of their configuration and never ranked, whether the run records carry an ``identity``
block (Contract 2 of issue 12) or are older records named ``<model>+<variant>+frac0.1``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermbench.data.contract import load_dataset
from dermbench.data.synth import make_synthetic_dataset
from dermbench.report import ReportOptions, build_report
from dermbench.report.collect import identity_from_variant, read_identity
from dermbench.runs.evaluate import finalize_cell
from dermbench.runs.record import RunRecorder, cell_dir

#: (model, variant, curve axis, curve value, skill): the curve points score BETTER than their
#: configuration's full-data cell, so a report that ranked them would put them first
CELLS = [
    ("vit", "logreg", None, None, 1.5),
    ("vit", "logreg", "label_fraction", 0.1, 0.3),
    ("vit", "logreg", "label_fraction", 0.5, 6.0),
    ("vit", "logreg", "k_shot", 5, 5.0),
    ("vit", "logreg", "k_shot", 10, 5.5),
    ("cnn", "rf", None, None, 1.0),
    ("cnn", "rf+random", None, None, 0.2),
]
CONFIGS = {"probe/vit+logreg", "probe/cnn+rf", "probe/cnn+rf+random"}


def _identity(model: str, variant: str, axis: str | None, value: float | None) -> dict:
    config_label = f"{model}+{variant}"
    point = {"label_fraction": f"+frac{value:g}" if axis == "label_fraction" else "", "k_shot": f"+{value}shot",
             None: ""}[axis]
    return {"model": model, "variant": variant, "config_label": config_label, "label": config_label + point,
            "curve_axis": axis, "curve_value": value}


def _scores(ds, split: str, skill: float, seed: int) -> pd.DataFrame:
    df = ds.split(split)
    rng = np.random.default_rng(seed)
    margin = skill * (2 * df["label"].to_numpy() - 1) + rng.normal(0, 1, len(df))
    return pd.DataFrame({"img_id": df["img_id"], "p_malignant": 1 / (1 + np.exp(-margin))})


def _write_runs(base: Path, *, with_identity: bool) -> Path:
    """A runs folder of the CELLS on one synthetic dataset; ``with_identity=False`` writes records as
    they were before issue 12: the curve point only in the variant (folder label) and settings."""
    data = base / "data" / "synth"
    if not data.exists():
        make_synthetic_dataset(data, n=80, size=32, seed=0, progress=False)
    ds = load_dataset(data, quiet=True, check_images=False)
    runs = base / ("runs_new" if with_identity else "runs_old")
    for k, (model, variant, axis, value, skill) in enumerate(CELLS):
        ident = _identity(model, variant, axis, value)
        settings = {"head": variant.split("+")[0], "label_fraction": value if axis == "label_fraction" else 1.0,
                    "k_shot": value if axis == "k_shot" else None}
        spec = {"experiment": "x", "paradigm": "probe", "model": model, "dataset": str(ds.root), "seed": 1,
                "settings": settings}
        if with_identity:
            spec["identity"] = ident
        else:
            spec["variant"] = ident["label"][len(model) + 1:]  # e.g. "logreg+frac0.1", as folders were named
        rec = RunRecorder(cell_dir(runs, "x", "probe", ident["label"], ds.name, 1))
        rec.begin(spec)
        finalize_cell(rec, ds, {s: _scores(ds, s, skill, seed=k) for s in ("validation", "test")}, n_boot=20,
                      seed=1, cell=spec, provenance={"weights": "random init"})
    return runs


@pytest.fixture(scope="module", params=[True, False], ids=["identity", "old-records"])
def report(request, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("identity")
    runs = _write_runs(base, with_identity=request.param)
    out = base / "report"
    build_report(runs, out, ReportOptions(top_k=5, max_thumbs=1, quiet=True, error_pages=False))
    return out


def test_results_csv_names_configuration_and_curve_point(report: Path) -> None:
    results = pd.read_csv(report / "results.csv")
    assert {"config_label", "variant", "curve_axis", "curve_value"} <= set(results.columns)
    cells = results.drop_duplicates("entry").set_index("entry")
    assert len(cells) == len(CELLS)
    point = cells.loc["probe/vit+logreg+frac0.1"]
    assert point["config_label"] == "vit+logreg" and point["variant"] == "logreg"
    assert point["curve_axis"] == "label_fraction" and point["curve_value"] == pytest.approx(0.1)
    shots = cells.loc["probe/vit+logreg+5shot"]
    assert shots["curve_axis"] == "k_shot" and shots["curve_value"] == 5
    full = cells.loc["probe/vit+logreg"]
    assert full["config_label"] == "vit+logreg" and pd.isna(full["curve_axis"]) and pd.isna(full["curve_value"])
    assert cells.loc["probe/cnn+rf+random", "variant"] == "rf+random"


def test_rankings_have_one_row_per_configuration_and_no_curve_point(report: Path) -> None:
    md = (report / "leaderboards" / "synth.md").read_text()
    ranked = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| ") and " | probe |" in line]
    assert set(ranked) == CONFIGS and len(ranked) == len(CONFIGS)
    assert ranked[0] == "probe/vit+logreg"  # the best full-data configuration, not its frac0.5 point
    matrix = pd.read_csv(report / "tables" / "metric_matrix__auroc.csv", index_col="dataset")
    assert set(matrix.columns) == CONFIGS
    best = pd.read_csv(report / "tables" / "overall_best_by_auroc.csv")
    assert set(best["best"]) == {"probe/vit+logreg"} and set(best["n_compared"]) == {len(CONFIGS)}
    delong = pd.read_csv(report / "tables" / "delong.csv")
    assert set(delong["model_a"]) | set(delong["model_b"]) == CONFIGS and len(delong) == 3


def test_curve_points_are_drawn_as_curves_of_their_configuration(report: Path) -> None:
    assert (report / "plots" / "label_fraction__synth.png").stat().st_size > 1000
    assert (report / "plots" / "k_shot__synth.png").stat().st_size > 1000
    index = (report / "index.html").read_text()
    assert 'href="#curves"' in index and "plots/label_fraction__synth.png" in index
    curves = index[index.index('id="curves"'):]
    # the curve table: the full-data cell is the point 1 of its configuration's label-fraction curve
    for point in ("0.100", "0.500", "1.000", "5.000", "10.000"):
        assert f"<td class=\"num\">{point}</td>" in curves, point
    assert "probe/vit+logreg" in curves and "probe/cnn+rf" not in curves


def test_identity_is_read_from_the_record_or_derived_from_old_labels() -> None:
    ident = _identity("vit", "logreg", "label_fraction", 0.25)
    assert read_identity({"cell": {"identity": ident}}, {}) == ident
    assert read_identity({}, {"identity": ident}) == ident
    old = read_identity({}, {"model": "vit", "variant": "logreg+frac0.25", "settings": {"label_fraction": 0.25}})
    assert old == ident
    assert identity_from_variant("vit", "logreg+5shot", {}) == _identity("vit", "logreg", "k_shot", 5)
    # a full-data probe cell records label_fraction 1.0: not a curve point
    assert identity_from_variant("vit", "logreg", {"label_fraction": 1.0})["curve_axis"] is None
    assert identity_from_variant("resnet18", "balanced_aug+random", {})["config_label"] == "resnet18+balanced_aug+random"
