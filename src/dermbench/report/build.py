"""``dermbench report RUNS --out DIR``: every complete cell under RUNS -> tables, plots, pages.

::

    DIR/
      index.html                         the whole report (open it in a browser; no network needed)
      results.csv                        tidy: one row per cell x split x metric, with CI bounds
      summary.csv                        mean/sd over seeds per entry x dataset x split x metric
      leaderboards.md, leaderboards/<dataset>.md
      tables/metric_matrix__<metric>.csv datasets x models (test, mean over seeds), every metric
      tables/overall_best_by_<metric>.csv best model per dataset, overall and per paradigm
      tables/delong.csv                  paired DeLong tests of the top models per dataset
      tables/incomplete_cells.csv        failed or partial cells
      plots/*.png  errors/*.html  thumbs/*.jpg
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils.atomic import atomic_write_text
from ..utils.paths import safe_name
from . import html as H
from . import plots
from .collect import CellRecord, RunsIndex, collect_runs
from .tables import (TIE_RULE, delong_table, format_ci, leaderboard, leaderboard_markdown, metric_matrix,
                     metric_names, overall_best, results_frame, seed_summary)


@dataclass
class ReportOptions:
    metric: str = "auroc"          # the metric leaderboards and plots rank by
    split: str = "test"
    top_k: int = 5                 # models in the DeLong table, ROC and reliability plots
    error_pages: bool = True
    max_thumbs: int = 24           # per kind of error and page
    quiet: bool = False
    notes: list[str] = field(default_factory=list)  # shown at the top of index.html (e.g. what the demo skipped)


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
        raise ValueError(f"unknown metric {opts.metric!r}; available: {', '.join(metric_names())}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = collect_runs(runs)
    log = (lambda msg: None) if opts.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    log(f"report: {len(index.cells)} complete cell(s), {len(index.incomplete)} incomplete, from {index.root}")
    files: list[Path] = []

    results = results_frame(index.cells)
    summary = seed_summary(results)
    files.append(_csv(results, out / "results.csv"))
    files.append(_csv(summary, out / "summary.csv"))
    datasets = sorted(results["dataset"].unique()) if len(results) else []

    # leaderboards ---------------------------------------------------------------------------------
    boards: dict[str, pd.DataFrame] = {}
    md_all = [f"# Leaderboards ({opts.metric}, {opts.split})\n"]
    for ds in datasets:
        boards[ds] = leaderboard(summary, ds, opts.metric, opts.split)
        md = leaderboard_markdown(boards[ds], ds, opts.metric, opts.split)
        md_all.append(md)
        path = out / "leaderboards" / f"{safe_name(ds)}.md"
        atomic_write_text(path, md)
        files.append(path)
    atomic_write_text(out / "leaderboards.md", "\n".join(md_all))
    files.append(out / "leaderboards.md")

    # the study's summary tables --------------------------------------------------------------------
    tables_dir = out / "tables"
    best_frames: dict[str, pd.DataFrame] = {}
    for metric in metric_names():
        matrix = metric_matrix(summary, metric, opts.split)
        if not matrix.empty:
            files.append(_csv(matrix, tables_dir / f"metric_matrix__{metric}.csv", index=True))
        best_frames[metric] = overall_best(summary, metric, opts.split)
        files.append(_csv(best_frames[metric], tables_dir / f"overall_best_by_{metric}.csv"))
    delong = pd.concat([delong_table(index.cells, summary, ds, opts.top_k, opts.split) for ds in datasets],
                       ignore_index=True) if datasets else pd.DataFrame()
    files.append(_csv(delong, tables_dir / "delong.csv"))
    incomplete = pd.DataFrame([{"state": c.state, "path": str(c.path), "error": c.error} for c in index.incomplete],
                              columns=["state", "path", "error"])
    files.append(_csv(incomplete, tables_dir / "incomplete_cells.csv"))

    # plots -----------------------------------------------------------------------------------------
    log("report: drawing plots")
    plot_dir = out / "plots"
    figures: dict[str, Any] = {"datasets": {}}
    matrix = metric_matrix(summary, opts.metric, opts.split)
    figures["heatmap"] = plots.heatmap(matrix, opts.metric, plot_dir / f"heatmap__{opts.metric}.png")
    for ds in datasets:
        name = safe_name(ds)
        top = plots.top_cells(index.cells, summary, ds, opts.metric, opts.top_k)
        figs = {
            "bars": plots.bars_with_ci(boards[ds], opts.metric, f"{ds}: {opts.metric} on {opts.split}",
                                       plot_dir / f"bars__{name}.png"),
            "roc": plots.roc_curves(top, f"{ds}: ROC curves (test) of the top {len(top)}", plot_dir / f"roc__{name}.png"),
            "reliability": plots.reliability(top[:4], f"{ds}: reliability (test)", plot_dir / f"reliability__{name}.png"),
            "subgroups": [],
        }
        frames = [(c, c.subgroups()) for c in top[:4]]
        frames = [(c, f) for c, f in frames if f is not None and len(f)]
        attributes = sorted({a for _, f in frames for a in f["attribute"].unique()}) if frames else []
        for attribute in attributes:
            fig = plots.subgroup_plot(frames, attribute, f"{ds}: AUROC by {attribute} (test)",
                                      plot_dir / f"subgroups__{name}__{safe_name(attribute)}.png")
            if fig:
                figs["subgroups"].append((attribute, fig))
        figures["datasets"][ds] = figs
    failures = _parse_failure_rows(index.cells)
    figures["parse_failures"] = plots.parse_failures(failures, plot_dir / "zeroshot_parse_failures.png")
    fraction_rows = _label_fraction_rows(index.cells, results, opts.metric, opts.split)
    curves = {
        ds: plots.label_fraction_curves(fraction_rows[fraction_rows["dataset"] == ds], opts.metric,
                                        f"{ds}: probe {opts.metric} vs. training labels",
                                        plot_dir / f"label_fraction__{safe_name(ds)}.png")
        for ds in sorted(fraction_rows["dataset"].unique())} if len(fraction_rows) else {}
    # Every probe cell records its label fraction; a dataset with a single fraction draws no curve
    # (None) and must not produce an empty "probe curves" section.
    figures["label_fraction"] = {ds: fig for ds, fig in curves.items() if fig is not None}

    # error-analysis pages --------------------------------------------------------------------------
    error_links = []
    if opts.error_pages:
        log("report: error-analysis pages")
        error_links = _error_pages(index.cells, out, opts)

    page = _index_html(index, opts, boards, best_frames.get(opts.metric, pd.DataFrame()), delong, figures, failures,
                       error_links, out, summary)
    atomic_write_text(out / "index.html", page)
    files.append(out / "index.html")
    log(f"report: wrote {out / 'index.html'} in {time.perf_counter() - t0:.1f}s")
    return Report(out, out / "index.html", len(index.cells), len(index.incomplete), files)


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


def _label_fraction_rows(cells: list[CellRecord], results: pd.DataFrame, metric: str, split: str) -> pd.DataFrame:
    """Probe cells that record a label fraction: one point per cell of the curve of its
    backbone+head (the variant without its ``frac`` part)."""
    rows = []
    for c in cells:
        settings = (c.metrics.get("cell") or {}).get("settings") or {}
        fraction = c.extra.get("label_fraction", settings.get("label_fraction"))
        if fraction is None:
            continue
        value = ((c.metrics.get("splits") or {}).get(split, {}).get("metrics", {}).get(metric, {}) or {}).get("value")
        if value is None:
            continue
        variant = "+".join(p for p in c.variant.split("+") if not p.startswith("frac"))
        curve = f"{c.paradigm}/{c.model}" + (f"+{variant}" if variant else "")
        rows.append({"dataset": c.dataset, "curve": curve, "label_fraction": float(fraction), "value": float(value)})
    return pd.DataFrame(rows, columns=["dataset", "curve", "label_fraction", "value"])


def _error_pages(cells: list[CellRecord], out: Path, opts: ReportOptions) -> list[dict[str, Any]]:
    from ..data.contract import load_dataset

    path_maps: dict[str, dict[str, str] | None] = {}
    links = []
    for c in sorted(cells, key=lambda c: (c.dataset, c.entry, c.seed)):
        pred = c.predictions("test")
        if pred is None:
            continue
        root = str((c.metrics.get("dataset") or {}).get("root") or (c.metrics.get("cell") or {}).get("dataset") or "")
        if root not in path_maps:
            try:
                ds = load_dataset(root, check_images=False, quiet=True, splits=("test",))
                path_maps[root] = dict(zip(ds.split("test")["img_id"].astype(str), ds.split("test")["path"]))
            except Exception:  # the dataset folder is not here (report built on another machine)
                path_maps[root] = None
        name = safe_name(f"{c.experiment}__{c.paradigm}__{c.model_label}__{c.dataset}__seed{c.seed}") + ".html"
        text, counts = H.error_page(c, pred, path_maps[root], out / "thumbs", "../thumbs", "../index.html",
                                    opts.max_thumbs)
        atomic_write_text(out / "errors" / name, text)
        links.append({"entry": c.entry, "dataset": c.dataset, "seed": c.seed, "href": f"errors/{name}", **counts})
    return links


def _index_html(index: RunsIndex, opts: ReportOptions, boards: dict[str, pd.DataFrame], best: pd.DataFrame,
                delong: pd.DataFrame, figures: dict[str, Any], failures: pd.DataFrame,
                error_links: list[dict[str, Any]], out: Path, summary: pd.DataFrame) -> str:
    e = H.e

    def rel(p: Path | None) -> str | None:
        return str(p.relative_to(out)) if p else None

    datasets = list(boards)
    paradigms = sorted({c.paradigm for c in index.cells})
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<h1>dermbench report</h1>",
             f"<p class=note>Runs folder <code>{e(str(index.root))}</code>; built {e(stamp)}. "
             f"{len(index.cells)} complete cell(s) over {len(datasets)} dataset(s) and {len(paradigms)} paradigm(s) "
             f"({e(', '.join(paradigms))}); {len(index.incomplete)} failed or partial. "
             f"Leaderboards rank by <b>{e(opts.metric)}</b> on the <b>{e(opts.split)}</b> split, {e(TIE_RULE)}. "
             f"Intervals are 95% bootstrap CIs (resampling patients or lesions where the dataset has them); "
             f"for a model run with several seeds the value is the mean over seeds, the interval the mean of the "
             f"per-seed bounds, and the sd over seeds is shown.</p>"]
    for note in opts.notes:
        parts.append(f"<p class=warn>{e(note)}</p>")
    nav = ['<a href="#overview">overview</a>'] + [f'<a href="#ds-{e(safe_name(d))}">{e(d)}</a>' for d in datasets]
    for anchor, label, present in (("zeroshot", "zeroshot failures", len(failures)),
                                   ("curves", "probe curves", figures["label_fraction"]),
                                   ("errors", "error analysis", error_links),
                                   ("incomplete", "failed cells", index.incomplete), ("files", "files", True)):
        if present is not None and (len(present) if hasattr(present, "__len__") else present):
            nav.append(f'<a href="#{anchor}">{e(label)}</a>')
    parts.append("<nav>" + " ".join(nav) + "</nav>")

    if not index.cells:
        parts.append("<p class=warn>No complete cell was found. Run <code>dermbench run CONFIG</code> first.</p>")

    parts.append('<h2 id="overview">Overview</h2>')
    if len(best):
        parts.append(f"<h3>Best model per dataset by {e(opts.metric)} (overall and per paradigm)</h3>")
        view = best.copy()
        view["value [95% CI]"] = [format_ci(v, lo, hi) for v, lo, hi in zip(view["value"], view["ci_low"], view["ci_high"])]
        parts.append(H.table(view, ["dataset", "paradigm", "best", "value [95% CI]", "n_seeds", "runner_up",
                                    "runner_up_value", "tie_decided", "n_compared"],
                             headers={"tie_decided": "tie broken by rule", "n_compared": "models compared"}))
    parts.append(H.img(rel(figures.get("heatmap")), f"heatmap of {opts.metric}"))

    for ds in datasets:
        board = boards[ds]
        figs = figures["datasets"].get(ds, {})
        parts.append(f'<h2 id="ds-{e(safe_name(ds))}">{e(ds)}</h2>')
        n_test = summary[(summary["dataset"] == ds) & (summary["split"] == opts.split)]["n"].max()
        parts.append(f"<p class=note>{e(str(len(board)))} model(s); {e(H.fmt(n_test))} {e(opts.split)} images. "
                     f'Full table: <a href="leaderboards/{e(safe_name(ds))}.md">leaderboard (markdown)</a>.</p>')
        view = board.head(25).copy()
        view[f"{opts.metric} [95% CI]"] = [format_ci(v, lo, hi) for v, lo, hi in
                                           zip(view["value"], view["ci_low"], view["ci_high"])]
        view["rank"] = [f"{r} (tie)" if t else str(r) for r, t in zip(view["rank"], view["tied"])]
        others = [c for c in ("auprc", "sens_at_spec90", "balanced_accuracy", "brier") if c in view.columns and c != opts.metric]
        parts.append(H.table(view, ["rank", "entry", "paradigm", f"{opts.metric} [95% CI]", "sd", "n_seeds"] + others,
                             headers={"entry": "model", "sd": "sd over seeds", "n_seeds": "seeds"},
                             cell=lambda c, v, row: (f'<span class="tag" style="background:{plots.colour(str(v))}">'
                                                     f"{e(str(v))}</span>") if c == "paradigm" else None))
        parts.append(H.img(rel(figs.get("bars")), f"{ds} bars"))
        parts.append('<div class="grid">' + H.img(rel(figs.get("roc")), f"{ds} ROC") + "</div>")
        parts.append(H.img(rel(figs.get("reliability")), f"{ds} reliability"))
        for attribute, fig in figs.get("subgroups", []):
            parts.append(H.img(rel(fig), f"{ds} subgroups by {attribute}"))
        dl = delong[delong["dataset"] == ds] if len(delong) else delong
        if len(dl):
            parts.append(f"<h3>Paired DeLong tests of AUROC, top {e(str(opts.top_k))} models</h3>"
                         "<p class=note>Same test images, lowest seed of each model; p-values two-sided, "
                         "Holm-adjusted over the pairs of this dataset.</p>")
            parts.append(H.table(dl, ["model_a", "model_b", "auc_a", "auc_b", "diff", "ci_low", "ci_high", "p_value",
                                      "p_holm", "n", "note"],
                                 headers={"ci_low": "diff CI low", "ci_high": "diff CI high"}))

    if len(failures):
        parts.append('<h2 id="zeroshot">Zeroshot: unparsed answers and failed requests</h2>')
        parts.append(H.img(rel(figures.get("parse_failures")), "parse failures"))
        parts.append(H.table(failures, ["entry", "dataset", "unparsed_rate", "failed_rate"]))
    if figures["label_fraction"]:
        parts.append('<h2 id="curves">Probe label-fraction curves</h2>')
        for ds, fig in figures["label_fraction"].items():
            parts.append(H.img(rel(fig), f"{ds} label fraction"))

    if error_links:
        parts.append('<h2 id="errors">Error analysis</h2><p class=note>One page per run: thumbnails of '
                     "false-benign and false-malignant test images with their scores.</p>")
        frame = pd.DataFrame(error_links)
        parts.append(H.table(frame, ["dataset", "entry", "seed", "false_benign", "false_malignant", "n", "href"],
                             headers={"href": "page", "n": "test images"},
                             cell=lambda c, v, row: f'<a href="{e(str(v))}">errors</a>' if c == "href" else None))
    if index.incomplete:
        parts.append('<h2 id="incomplete">Failed or partial cells</h2><p class=note>Re-running the grid redoes '
                     "them; a failed cell's traceback is in its <code>error.txt</code>.</p>")
        frame = pd.DataFrame([{"state": c.state, "cell": str(c.path.relative_to(index.root)), "error": c.error}
                              for c in index.incomplete])
        parts.append(H.table(frame))

    parts.append('<h2 id="files">Files</h2><ul>'
                 + "".join(f'<li><a href="{e(f)}">{e(f)}</a></li>' for f in
                           ["results.csv", "summary.csv", "leaderboards.md", f"tables/metric_matrix__{opts.metric}.csv",
                            f"tables/overall_best_by_{opts.metric}.csv", "tables/delong.csv",
                            "tables/incomplete_cells.csv"])
                 + "</ul><p class=note>Every metric has its own <code>tables/metric_matrix__&lt;metric&gt;.csv</code> "
                   "and <code>tables/overall_best_by_&lt;metric&gt;.csv</code>.</p>")
    return H.page("dermbench report", "\n".join(parts))
