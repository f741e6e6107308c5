"""``index.html``: what each section of the report's main page shows, handed to its template.

Each function builds one section's content from the report's tables and figures; the template
(``templates/index.html``) lays it out. Paths of figures are made relative to the report folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.splits import LEAKY_SPLIT_NOTE
from ..utils.paths import safe_name
from .collect import CellRecord, RunsIndex
from .html import Table, fmt, render, table
from .plots import colour
from .datasets import configuration_notes, datasets_section
from .tables import RANKING_SCOPE, TIE_RULE, format_ci, rank_text, verdict
from .transfer import transfer_section

#: metrics shown beside the ranking metric in the leaderboard tables
ALSO_SHOWN = ("auprc", "sens_at_spec90", "balanced_accuracy", "brier")
#: rows of a dataset's leaderboard on the page (the markdown leaderboard has all)
BOARD_ROWS = 25


@dataclass
class ReportContent:
    """Everything the report computed that the main page shows."""

    index: RunsIndex
    out: Path
    metric: str
    split: str
    top_k: int
    notes: list[str]
    boards: dict[str, pd.DataFrame]      # dataset -> ranked leaderboard
    best: pd.DataFrame                   # overall_best of the ranking metric
    summary: pd.DataFrame
    delong: pd.DataFrame
    failures: pd.DataFrame               # zeroshot unparsed/failed rates per entry x dataset
    curve_points: pd.DataFrame           # tables.curve_points of the ranking metric
    figures: dict[str, Any] = field(default_factory=dict)
    error_links: list[dict[str, Any]] = field(default_factory=list)
    comparison: Any = None               # comparison.Comparison when a cell matches a published one
    transfer: Any = None                 # transfer.TransferData: transfer records and calibrated cells
    small_rule: Any = None               # metrics.small_sample.SmallSampleRule the tables were marked by

    def rel(self, path: Path | None) -> str | None:
        return str(path.relative_to(self.out)) if path else None


def index_page(content: ReportContent) -> str:
    """The whole ``index.html``."""
    index = content.index
    paradigms = sorted({c.paradigm for c in index.cells})
    return render(
        "index.html", title="dermbench report", root=str(index.root),
        stamp=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), n_cells=len(index.cells),
        n_incomplete=len(index.incomplete), paradigms=paradigms, metric=content.metric, split=content.split,
        top_k=content.top_k, ranking_scope=RANKING_SCOPE, tie_rule=TIE_RULE, notes=content.notes,
        small_rule=_rule_text(content.small_rule),
        transfer=transfer_section(content.transfer, content.rel),
        nav=navigation(content), best=best_table(content.best),
        heatmap=content.rel(content.figures.get("heatmap")),
        datasets=[dataset_section(content, ds) for ds in content.boards],
        zeroshot=zeroshot_section(content), curves=curves_section(content), errors=error_table(content),
        incomplete=incomplete_table(index), comparison=comparison_summary(content),
        dataset_info=datasets_section(index.cells),
        files=report_files(content.metric) + comparison_files(content))


def _rule_text(rule: Any) -> str:
    from ..metrics.small_sample import DEFAULT_RULE

    rule = rule or DEFAULT_RULE
    return f"{rule.min_images} images or {rule.min_positives} malignant (or benign) ones"


def navigation(content: ReportContent) -> list[tuple[str, str]]:
    """(anchor, label) of the page's sections that have content."""
    nav = [("#overview", "overview"), ("#datasets", "datasets")] + [(f"#ds-{safe_name(ds)}", ds)
                                                                    for ds in content.boards]
    present = {"zeroshot": len(content.failures) > 0, "curves": bool(content.figures.get("curves")),
               "errors": bool(content.error_links), "incomplete": bool(content.index.incomplete)}
    labels = {"zeroshot": "zeroshot failures", "curves": "curves", "errors": "error analysis",
              "incomplete": "failed cells"}
    nav += [(f"#{anchor}", labels[anchor]) for anchor, shown in present.items() if shown]
    if content.transfer is not None and content.transfer.any:
        nav.append(("#transfer", "transfer and calibration"))
    if content.comparison is not None:
        nav.append(("comparison.html", "compared with the paper"))
    return nav + [("#files", "files")]


def comparison_summary(content: ReportContent) -> dict[str, Any] | None:
    """Counts of the comparison with the paper for the overview (its own page has the rest)."""
    comparison = content.comparison
    if comparison is None:
        return None
    rows = comparison.rows
    with_ci = rows[rows["paper_in_ci"].notna()] if len(rows) else rows
    return {"href": "comparison.html", "n_matched": comparison.n_matched_cells,
            "n_published": comparison.n_published_cells, "n_values": len(rows), "n_with_ci": len(with_ci),
            "n_inside": int(with_ci["paper_in_ci"].sum()) if len(with_ci) else 0}


def comparison_files(content: ReportContent) -> list[str]:
    from .comparison import CSV_NAME, PAGE_NAME, UNMATCHED_CSV_NAME

    return [PAGE_NAME, CSV_NAME, UNMATCHED_CSV_NAME] if content.comparison is not None else []


def _with_ci(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    view = frame.copy()
    view[column] = [format_ci(v, lo, hi) for v, lo, hi in zip(view["value"], view["ci_low"], view["ci_high"])]
    return view


def best_table(best: pd.DataFrame) -> Table | None:
    """Best configuration per dataset, overall and per paradigm: a winner only when its CI is apart
    from the runner-up's, else "tied within CI"; the runner-up in the same cell (the table must fit
    a page with long model names); a small test set noted."""
    if not len(best):
        return None
    view = _with_ci(best, "first [95% CI]")
    view["verdict"] = [f"{b}" if v.startswith("best") or v == "only configuration" else f"tied within CI: {b} / {r}"
                       for b, r, v in zip(view["best"], view["runner_up"], view["verdict"])]
    view["runner-up [95% CI]"] = [f"{r}: {format_ci(v, lo, hi)}" if r else "—" for r, v, lo, hi in
                                  zip(view["runner_up"], view["runner_up_value"], view["runner_up_ci_low"],
                                      view["runner_up_ci_high"])]
    view["test set"] = [f"small (n={int(n)})" if note else ("—" if pd.isna(n) else f"n={int(n)}")
                        for note, n in zip(view["small_test_set"], view["n"])]
    return table(view, ["dataset", "paradigm", "verdict", "first [95% CI]", "runs", "runner-up [95% CI]",
                        "n_compared", "test set"],
                 headers={"verdict": "best (winner only when CIs are apart)", "n_compared": "models"},
                 breakable=("verdict", "runner-up [95% CI]"))


def leaderboard_table(board: pd.DataFrame, metric: str) -> Table:
    """The first rows of a dataset's leaderboard, paradigm as a coloured tag."""
    view = _with_ci(board.head(BOARD_ROWS), f"{metric} [95% CI]")
    view["rank"] = [rank_text(r, t, bool(w)) for r, t, w in
                    zip(view["rank"], view["tied"], view.get("tied_within_ci", pd.Series(False, index=view.index)))]
    others = [c for c in ALSO_SHOWN if c in view.columns and c != metric]
    columns = ["rank", "entry", "paradigm", f"{metric} [95% CI]", "sd", "runs" if "runs" in view.columns else "n_seeds"]
    if "small_test_set" in view.columns and view["small_test_set"].astype(bool).any():
        view["test set"] = [("small: " + note.split("(")[1].split(";")[0]) if note else "" for note in
                            view["small_test_set"]]
        columns.append("test set")
    return table(view, columns + others,
                 headers={"entry": "model", "sd": "sd over runs", "n_seeds": "seeds"}, tags={"paradigm": colour},
                 breakable=("entry",))


def dataset_section(content: ReportContent, ds: str) -> dict[str, Any]:
    """One dataset: leaderboard, its figures and the DeLong comparisons of its top models."""
    figures = content.figures["datasets"].get(ds, {})
    summary = content.summary
    n_images = summary[(summary["dataset"] == ds) & (summary["split"] == content.split)]["n"].max()
    delong = content.delong[content.delong["dataset"] == ds] if len(content.delong) else content.delong
    cells = [c for c in content.index.cells if c.dataset == ds]
    board = content.boards[ds]
    small = next((n for n in board.get("small_test_set", []) if n), "")
    return {
        "verdict": verdict(board) if "tied_within_ci" in board.columns else "",
        "small": small, "figure_notes": figures.get("notes", []),
        "config_notes": configuration_notes(cells, ds),
        "anchor": f"ds-{safe_name(ds)}", "name": ds, "n_models": len(content.boards[ds]), "n_images": fmt(n_images),
        **dataset_labels(cells),
        "markdown": f"leaderboards/{safe_name(ds)}.md", "board": leaderboard_table(content.boards[ds], content.metric),
        "bars": content.rel(figures.get("bars")), "roc": content.rel(figures.get("roc")),
        "reliability": content.rel(figures.get("reliability")),
        "subgroups": [(attribute, content.rel(fig)) for attribute, fig in figures.get("subgroups", [])],
        "delong": table(delong, ["model_a", "model_b", "runs", "auc_a", "auc_b", "diff", "ci_low", "ci_high",
                                 "p_value", "p_holm", "n", "note"],
                        headers={"ci_low": "diff CI low", "ci_high": "diff CI high", "runs": "runs compared",
                                 "p_value": "p (largest over runs)"},
                        breakable=("model_a", "model_b")) if len(delong) else None,
    }


def dataset_labels(cells: list[CellRecord]) -> dict[str, str]:
    """What a dataset section says about its labels and split: the label definition(s) its cells'
    records name (``prepare --labels``), and the leaky-split mark when any was split ``ungrouped``."""
    definitions = sorted({c.label_definition or "not recorded" for c in cells})
    leaky = any(c.split_grouping == "ungrouped" for c in cells)
    return {"label_definition": ", ".join(definitions), "split_note": LEAKY_SPLIT_NOTE if leaky else ""}


def zeroshot_section(content: ReportContent) -> dict[str, Any] | None:
    if not len(content.failures):
        return None
    return {"figure": content.rel(content.figures.get("parse_failures")),
            "table": table(content.failures, ["entry", "dataset", "unparsed_rate", "failed_rate"])}


def curves_section(content: ReportContent) -> dict[str, Any] | None:
    """The curve figures and their points (mean over seeds), when a curve was drawn."""
    figures = content.figures.get("curves") or []
    if not figures:
        return None
    points = content.curve_points.groupby(["dataset", "curve", "axis", "x"], as_index=False).agg(
        value=("value", "mean"), n_seeds=("value", "count")).sort_values(["dataset", "curve", "axis", "x"])
    return {"figures": [(content.rel(path), alt) for path, alt in figures],
            "table": table(points, ["dataset", "curve", "axis", "x", "value", "n_seeds"],
                           headers={"curve": "configuration", "x": "point", "n_seeds": "seeds",
                                    "value": f"{content.metric} ({content.split})"})}


def error_table(content: ReportContent) -> Table | None:
    if not content.error_links:
        return None
    return table(pd.DataFrame(content.error_links), ["dataset", "entry", "seed", "false_benign", "false_malignant",
                                                      "n", "href"],
                 headers={"href": "page", "n": "test images"}, links={"href": "errors"})


def incomplete_table(index: RunsIndex) -> Table | None:
    if not index.incomplete:
        return None
    return table(pd.DataFrame([{"state": c.state, "cell": str(c.path.relative_to(index.root)), "error": c.error}
                               for c in index.incomplete]))


def report_files(metric: str) -> list[str]:
    return ["results.csv", "summary.csv", "leaderboards.md", f"tables/metric_matrix__{metric}.csv",
            f"tables/overall_best_by_{metric}.csv", "tables/delong.csv", "tables/incomplete_cells.csv"]
