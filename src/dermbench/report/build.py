"""``dermbench report RUNS --out DIR``: every complete cell under RUNS -> tables, plots, pages.

::

    DIR/
      index.html                         the whole report (open it in a browser; no network needed)
      results.csv                        tidy: one row per cell x split x metric, with CI bounds, the
                                         cell's configuration (config_label) and curve point
      summary.csv                        mean/sd over seeds per entry x dataset x split x metric
      leaderboards.md, leaderboards/<dataset>.md
      tables/metric_matrix__<metric>.csv datasets x models (test, mean over seeds), every metric
      tables/overall_best_by_<metric>.csv best model per dataset, overall and per paradigm
      tables/delong.csv                  paired DeLong tests of the top models per dataset
      tables/incomplete_cells.csv        failed or partial cells
      tables/transfer_*.csv, calibration.csv   transfer matrices' pairs, best model per dataset pair, by
                                         modality; calibration before/after (report/transfer.py)
      comparison.html, comparison_with_paper.csv   our numbers beside the paper's (when a cell matches one)
      plots/*.png  errors/*.html  thumbs/*.jpg

Rankings (leaderboards, best-model tables, heatmap, DeLong, ROC) have one row per configuration
(model + variant, the run record's ``identity.config_label``). Curve points (a label fraction
below 1, k images per class) are drawn as curves of their configuration, never ranked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import NoRunsError, UsageError
from ..utils.atomic import atomic_write_text
from ..utils.console import get_logger
from ..utils.paths import safe_name, writable_folder
from . import plots, stale
from .collect import CellRecord, RunsIndex, collect_runs
from .comparison import write_comparison
from .error_pages import write_error_pages
from .index_page import ReportContent, index_page
from .transfer import build_transfer, results_with_transfers
from ..metrics.small_sample import SMALL_N_IMAGES, SMALL_N_POSITIVES, SmallSampleRule
from .tables import (curve_points, delong_table, leaderboard, leaderboard_markdown, metric_matrix, metric_names,
                     overall_best, results_frame, seed_summary)


@dataclass
class ReportOptions:
    metric: str = "auroc"          # the metric leaderboards and plots rank by
    split: str = "test"
    top_k: int = 5                 # models in the DeLong table, ROC and reliability plots
    error_pages: bool = True
    max_thumbs: int = 24           # per kind of error and page
    quiet: bool = False
    notes: list[str] = field(default_factory=list)  # shown at the top of index.html (e.g. what the demo skipped)
    small_n: int = SMALL_N_IMAGES  # a test set below this many images, or below small_positives
    small_positives: int = SMALL_N_POSITIVES  # malignant (or benign) images, is marked "small" everywhere


@dataclass
class Report:
    out: Path
    index: Path
    n_cells: int
    n_incomplete: int
    files: list[Path] = field(default_factory=list)


def _csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n"))
    return path


def build_report(runs: str | Path, out: str | Path, options: ReportOptions | None = None) -> Report:
    """Build the whole report folder from the run records under ``runs``."""
    opts = options or ReportOptions()
    if opts.metric not in metric_names():
        raise UsageError(f"unknown metric {opts.metric!r}; available: {', '.join(metric_names())}")
    t0 = time.perf_counter()
    out = Path(out)
    index = collect_runs(runs)
    if not index.cells and not index.incomplete:
        raise NoRunsError(f"no run records under {index.root} (no cell folder with a config.yaml or COMPLETE); run "
                          f"`dermbench run CONFIG` first, or name the runs folder it wrote")
    writable_folder(out, "report folder --out")
    before = stale.snapshot(out)  # to remove what an earlier report wrote and this one does not
    log = (lambda msg: None) if opts.quiet else get_logger("report").info
    log(f"report: {len(index.cells)} complete cell(s), {len(index.incomplete)} incomplete, from {index.root}")

    results = results_frame(index.cells)
    summary = seed_summary(results)
    transfer, transfer_files = build_transfer(index, out, _csv)  # trained cells evaluated on other datasets
    files = [_csv(results_with_transfers(results, transfer), out / "results.csv"), _csv(summary, out / "summary.csv")]
    files += transfer_files
    datasets = sorted(results["dataset"].unique()) if len(results) else []
    rule = SmallSampleRule(opts.small_n, opts.small_positives)
    boards = {ds: leaderboard(summary, ds, opts.metric, opts.split, rule=rule) for ds in datasets}
    files += _write_leaderboards(boards, out, opts)
    best, delong, table_files = _write_summary_tables(index, summary, datasets, out / "tables", opts)
    files += table_files
    comparison, comparison_files = write_comparison(index, out, _csv)  # only when a cell matches a published one
    files += comparison_files
    content = ReportContent(index=index, out=out, metric=opts.metric, split=opts.split, top_k=opts.top_k,
                            notes=list(opts.notes), boards=boards, best=best, summary=summary, delong=delong,
                            failures=_parse_failure_rows(index.cells),
                            curve_points=curve_points(index.cells, opts.metric, opts.split),
                            comparison=comparison if comparison.any_match else None, small_rule=rule)

    content.transfer = transfer
    log("report: drawing plots")
    content.figures = _draw_figures(content, out / "plots")
    if opts.error_pages:
        log("report: error-analysis pages")
        content.error_links = write_error_pages(index.cells, out, opts.max_thumbs)
    atomic_write_text(out / "index.html", index_page(content))
    files.append(out / "index.html")
    removed = stale.remove_stale(out, before)
    if removed:
        log(f"report: removed {len(removed)} file(s) an earlier report wrote and this one does not "
            f"(e.g. {removed[0]})")
    log(f"report: wrote {out / 'index.html'} in {time.perf_counter() - t0:.1f}s")
    return Report(out, out / "index.html", len(index.cells), len(index.incomplete), files)


def _write_leaderboards(boards: dict[str, pd.DataFrame], out: Path, opts: ReportOptions) -> list[Path]:
    """``leaderboards/<dataset>.md`` and all of them in ``leaderboards.md``."""
    files = []
    md_all = [f"# Leaderboards ({opts.metric}, {opts.split})\n"]
    for ds, board in boards.items():
        md = leaderboard_markdown(board, ds, opts.metric, opts.split)
        md_all.append(md)
        path = out / "leaderboards" / f"{safe_name(ds)}.md"
        atomic_write_text(path, md)
        files.append(path)
    atomic_write_text(out / "leaderboards.md", "\n".join(md_all))
    return files + [out / "leaderboards.md"]


def _write_summary_tables(index: RunsIndex, summary: pd.DataFrame, datasets: list[str], tables_dir: Path,
                          opts: ReportOptions) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """The study's summary tables, DeLong comparisons and the incomplete cells under ``tables/``;
    returns the best-model table of the ranking metric, the DeLong table and the files."""
    files = []
    best_frames: dict[str, pd.DataFrame] = {}
    for metric in metric_names():
        matrix = metric_matrix(summary, metric, opts.split)
        if not matrix.empty:
            files.append(_csv(matrix, tables_dir / f"metric_matrix__{metric}.csv", index=True))
        best_frames[metric] = overall_best(summary, metric, opts.split,
                                           rule=SmallSampleRule(opts.small_n, opts.small_positives))
        files.append(_csv(best_frames[metric], tables_dir / f"overall_best_by_{metric}.csv"))
    delong = pd.concat([delong_table(index.cells, summary, ds, opts.top_k, opts.split) for ds in datasets],
                       ignore_index=True) if datasets else pd.DataFrame()
    files.append(_csv(delong, tables_dir / "delong.csv"))
    incomplete = pd.DataFrame([{"state": c.state, "path": str(c.path), "error": c.error} for c in index.incomplete],
                              columns=["state", "path", "error"])
    files.append(_csv(incomplete, tables_dir / "incomplete_cells.csv"))
    return best_frames[opts.metric], delong, files


def _draw_figures(content: ReportContent, plot_dir: Path) -> dict[str, Any]:
    """Every figure of the report: the heatmap, per dataset its figures, zeroshot failures, curves."""
    matrix = metric_matrix(content.summary, content.metric, content.split)
    return {
        "heatmap": plots.heatmap(matrix, content.metric, plot_dir / f"heatmap__{content.metric}.png"),
        "datasets": {ds: _dataset_figures(content, ds, plot_dir) for ds in content.boards},
        "parse_failures": plots.parse_failures(content.failures, plot_dir / "zeroshot_parse_failures.png"),
        "curves": _curve_figures(content, plot_dir),
    }


def _dataset_figures(content: ReportContent, ds: str, plot_dir: Path) -> dict[str, Any]:
    """Bars of the leaderboard, ROC and reliability of the top configurations, subgroup AUROCs,
    and ``notes`` on what was not drawn (too few images, a single subgroup value)."""
    name, metric = safe_name(ds), content.metric
    top = plots.top_cells(content.index.cells, content.summary, ds, metric, content.top_k)
    figs: dict[str, Any] = {
        "bars": plots.bars_with_ci(content.boards[ds], metric, f"{ds}: {metric} on {content.split}",
                                   plot_dir / f"bars__{name}.png"),
        "roc": plots.roc_curves(top, f"{ds}: ROC curves (test) of the top {len(top)}", plot_dir / f"roc__{name}.png"),
        "reliability": plots.reliability(top[:4], f"{ds}: reliability (test)", plot_dir / f"reliability__{name}.png"),
        "subgroups": [],
        "notes": [],
    }
    if top and figs["reliability"] is None:
        figs["notes"].append(f"No reliability diagram: fewer than {plots.RELIABILITY_MIN_IMAGES} test images (bins of "
                             f"fewer than {plots.RELIABILITY_MIN_BIN} images are never drawn).")
    frames = [(c, c.subgroups()) for c in top[:4]]
    frames = [(c, f) for c, f in frames if f is not None and len(f)]
    skipped = []
    for attribute in sorted({a for _, f in frames for a in f["attribute"].unique()}):
        fig = plots.subgroup_plot(frames, attribute, f"{ds}: AUROC by {attribute} (test)",
                                  plot_dir / f"subgroups__{name}__{safe_name(attribute)}.png")
        if fig:
            figs["subgroups"].append((attribute, fig))
        else:
            drawn, left = plots.subgroup_values(frames, attribute)
            skipped.append(f"{attribute} ({'one value: ' + drawn[0] if len(drawn) == 1 else 'none large enough'}"
                           + (f"; too small: {', '.join(left)}" if left else "") + ")")
    if skipped:
        min_n = int((top[0].metrics.get("subgroups") or {}).get("min_n") or plots.SUBGROUP_MIN_N) if top else \
            plots.SUBGROUP_MIN_N
        figs["notes"].append(f"Subgroup bars are drawn for subgroups of at least {min_n} test images with both classes, "
                             f"and only where two or more remain; not plotted: " + "; ".join(skipped) + ".")
    return figs


def _curve_figures(content: ReportContent, plot_dir: Path) -> list[tuple[Path, str]]:
    """One figure per dataset and curve axis that has a curve (two points or more of one
    configuration); a dataset whose cells are all full-data points draws none."""
    points = content.curve_points
    figures = []
    for ds in sorted(points["dataset"].unique()):
        for axis, what in (("label_fraction", "training labels"), ("k_shot", "training images per class")):
            path = plots.curves(points[points["dataset"] == ds], axis, content.metric,
                                f"{ds}: {content.metric} vs. {what}", plot_dir / f"{axis}__{safe_name(ds)}.png")
            if path is not None:
                figures.append((path, f"{ds} {axis.replace('_', ' ')} curves"))
    return figures


def _parse_failure_rows(cells: list[CellRecord]) -> pd.DataFrame:
    rows = [{"entry": c.entry, "dataset": c.dataset, "seed": c.seed,
             "unparsed_rate": _as_float(c.extra.get("unparsed_rate")), "failed_rate": _as_float(c.extra.get("failed_rate"))}
            for c in cells if "unparsed_rate" in c.extra or "failed_rate" in c.extra]
    frame = pd.DataFrame(rows, columns=["entry", "dataset", "seed", "unparsed_rate", "failed_rate"])
    return frame.groupby(["entry", "dataset"], as_index=False)[["unparsed_rate", "failed_rate"]].mean() \
        if len(frame) else frame


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
