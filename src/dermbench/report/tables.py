"""The report's tables: tidy results, seed summaries, leaderboards, the study's summary tables
and paired DeLong comparisons. Pure functions of the collected records and frames.

Ranking rule (used everywhere an order matters): by the metric's mean over seeds in its better
direction; ties broken by the conservative CI bound (the higher lower bound for a metric where
higher is better, the lower upper bound for Brier/ECE), then by the entry name. A tie is therefore
never broken by alphabetical accident alone, and the rule is stated on every page that ranks.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .collect import CellRecord

#: What the report ranks: one row per configuration (model + variant). Curve points (a label
#: fraction below 1, k images per class) are drawn as curves, never ranked as models.
RANKING_SCOPE = ("one row per configuration (model and variant); label-fraction and k-shot points are "
                 "drawn as curves, not ranked")

TIE_RULE = ("ranked by mean over seeds; ties broken by the conservative CI bound (higher lower bound, "
            "or lower upper bound for Brier/ECE), then by name")

ID_COLUMNS = ["experiment", "paradigm", "model", "variant", "config_label", "curve_axis", "curve_value", "entry",
              "dataset", "label_definition", "split_grouping", "seed"]
#: columns of the seed summary that say which configuration and curve point a row is
_SUMMARY_IDS = ["paradigm", "entry", "config_label", "curve_axis", "curve_value"]


def higher_is_better(metric: str) -> bool:
    from ..metrics import HIGHER_IS_BETTER

    return HIGHER_IS_BETTER.get(metric, True)


def metric_names() -> list[str]:
    from ..metrics import METRIC_NAMES

    return list(METRIC_NAMES)


def results_frame(cells: Iterable[CellRecord]) -> pd.DataFrame:
    """Tidy ``results.csv``: one row per cell × split × metric with value and CI bounds."""
    rows = []
    for c in cells:
        threshold = (c.metrics.get("threshold") or {}).get("value")
        for split, record in (c.metrics.get("splits") or {}).items():
            for metric, m in (record.get("metrics") or {}).items():
                rows.append({
                    "experiment": c.experiment, "paradigm": c.paradigm, "model": c.model, "variant": c.variant,
                    "config_label": c.config_label, "curve_axis": c.curve_axis, "curve_value": c.curve_value,
                    "entry": c.entry, "dataset": c.dataset, "label_definition": c.label_definition,
                    "split_grouping": c.split_grouping, "seed": c.seed, "split": split, "metric": metric,
                    "value": _num(m.get("value")), "ci_low": _num(m.get("ci_low")), "ci_high": _num(m.get("ci_high")),
                    "n": record.get("n"), "n_malignant": record.get("n_malignant"),
                    "n_benign": record.get("n_benign"), "threshold": threshold,
                    "undefined_reason": (record.get("undefined") or {}).get(metric, ""),
                })
    columns = ID_COLUMNS + ["split", "metric", "value", "ci_low", "ci_high", "n", "n_malignant", "n_benign",
                            "threshold", "undefined_reason"]
    return pd.DataFrame(rows, columns=columns)


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def seed_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per entry × dataset × split × metric: mean and sd over seeds, mean CI bounds.

    With one seed the CI is that cell's bootstrap CI; with several, ``ci_low``/``ci_high`` are the
    means of the per-seed bootstrap bounds and ``sd`` is the spread over seeds (ddof=1).
    ``n_seeds`` counts the seeds where the metric is defined, i.e. the values the mean is over.
    """
    if results.empty:
        return pd.DataFrame(columns=_SUMMARY_IDS + ["dataset", "split", "metric", "value", "sd", "ci_low",
                                                    "ci_high", "n_seeds", "n"])
    keys = [k for k in _SUMMARY_IDS if k in results.columns] + ["dataset", "split", "metric"]
    grouped = results.groupby(keys, sort=False, dropna=False)
    out = grouped.agg(value=("value", "mean"), sd=("value", "std"), ci_low=("ci_low", "mean"),
                      ci_high=("ci_high", "mean"), n_seeds=("value", "count"), n=("n", "max")).reset_index()
    return out


def full_data(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the report ranks (:data:`RANKING_SCOPE`): no curve point, or a curve's full-data
    point (label fraction 1). Frames without curve columns are all full data."""
    if "curve_axis" not in frame.columns:
        return frame
    axis = frame["curve_axis"]
    value = pd.to_numeric(frame["curve_value"], errors="coerce") if "curve_value" in frame.columns else None
    keep = axis.isna() | (axis == "")
    if value is not None:
        keep |= (axis == "label_fraction") & (value == 1.0)
    return frame[keep]


def rank(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Order ``frame`` (columns entry, value, ci_low, ci_high) by :data:`TIE_RULE`; adds ``rank``
    and ``tied`` (True where the value equals the previous row's, so the tie rule decided)."""
    hib = higher_is_better(metric)
    df = frame.copy()
    df["_missing"] = df["value"].isna()
    df["_v"] = -df["value"] if hib else df["value"]
    df["_b"] = -df["ci_low"] if hib else df["ci_high"]
    df["_b"] = df["_b"].fillna(np.inf)
    df = df.sort_values(["_missing", "_v", "_b", "entry"], kind="mergesort").drop(columns=["_missing", "_v", "_b"])
    df.insert(0, "rank", range(1, len(df) + 1))
    values = df["value"].to_numpy()
    tied = [False] + [bool(np.isclose(a, b, rtol=0, atol=1e-12)) for a, b in zip(values[1:], values[:-1])]
    df["tied"] = tied
    return df.reset_index(drop=True)


def leaderboard(summary: pd.DataFrame, dataset: str, metric: str, split: str = "test",
                also: Iterable[str] = ("auprc", "sens_at_spec90", "balanced_accuracy", "brier")) -> pd.DataFrame:
    """Configurations of one dataset ranked by ``metric``; a few more metrics alongside."""
    sub = full_data(summary[(summary["dataset"] == dataset) & (summary["split"] == split)])
    main = sub[sub["metric"] == metric][["paradigm", "entry", "value", "ci_low", "ci_high", "sd", "n_seeds", "n"]]
    ranked = rank(main, metric)
    for other in also:
        if other == metric:
            continue
        vals = sub[sub["metric"] == other].set_index("entry")["value"]
        ranked[other] = ranked["entry"].map(vals)
    return ranked


def leaderboard_markdown(board: pd.DataFrame, dataset: str, metric: str, split: str = "test") -> str:
    lines = [f"## {dataset} — {metric} on {split}", "", f"_{TIE_RULE}; {RANKING_SCOPE}._", ""]
    others = [c for c in board.columns if c not in ("rank", "paradigm", "entry", "value", "ci_low", "ci_high", "sd",
                                                     "n_seeds", "n", "tied")]
    header = ["rank", "model", "paradigm", f"{metric} [95% CI]", "sd over seeds", "seeds"] + others
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for _, r in board.iterrows():
        cells = [f"{r['rank']}{' (tie)' if r['tied'] else ''}", _md(r["entry"]), _md(r["paradigm"]),
                 format_ci(r["value"], r["ci_low"], r["ci_high"]), fmt(r["sd"]), str(int(r["n_seeds"]))]
        cells += [fmt(r[o]) for o in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{float(v):.{digits}f}"


def format_ci(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    if low is None or high is None or any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def metric_matrix(summary: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Datasets × entries of one metric (mean over seeds): ``metric_matrix__<metric>.csv``.
    Columns are ordered by the entries' mean over datasets in the metric's better direction; equal
    means keep the name order of the pivot (an explicit, stable rule, not an accident)."""
    sub = full_data(summary[(summary["split"] == split) & (summary["metric"] == metric)])
    if sub.empty:
        return pd.DataFrame()
    matrix = sub.pivot_table(index="dataset", columns="entry", values="value", aggfunc="mean")
    order = matrix.mean(axis=0).sort_values(ascending=not higher_is_better(metric), kind="mergesort")
    matrix = matrix[order.index]
    matrix.index.name = "dataset"
    return matrix


def overall_best(summary: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Per dataset, the best configuration overall and per paradigm: ``overall_best_by_<metric>.csv``."""
    sub = full_data(summary[(summary["split"] == split) & (summary["metric"] == metric)])
    rows = []
    for dataset in sorted(sub["dataset"].unique()):
        ds = sub[sub["dataset"] == dataset]
        for paradigm in ["all"] + sorted(ds["paradigm"].unique()):
            part = ds if paradigm == "all" else ds[ds["paradigm"] == paradigm]
            ranked = rank(part, metric)
            ranked = ranked[ranked["value"].notna()]
            if ranked.empty:
                continue
            best = ranked.iloc[0]
            runner = ranked.iloc[1] if len(ranked) > 1 else None
            rows.append({"dataset": dataset, "paradigm": paradigm, "metric": metric, "best": best["entry"],
                         "value": best["value"], "ci_low": best["ci_low"], "ci_high": best["ci_high"],
                         "n_seeds": int(best["n_seeds"]), "tie_decided": bool(runner is not None and
                                                                                np.isclose(runner["value"], best["value"], rtol=0, atol=1e-12)),
                         "runner_up": runner["entry"] if runner is not None else "",
                         "runner_up_value": runner["value"] if runner is not None else math.nan,
                         "n_compared": len(ranked)})
    return pd.DataFrame(rows, columns=["dataset", "paradigm", "metric", "best", "value", "ci_low", "ci_high",
                                       "n_seeds", "tie_decided", "runner_up", "runner_up_value", "n_compared"])


CURVE_COLUMNS = ["dataset", "paradigm", "curve", "axis", "x", "seed", "value"]


def curve_points(cells: Iterable[CellRecord], metric: str, split: str = "test") -> pd.DataFrame:
    """The points of every curve, one row per cell: ``curve`` is the configuration (its
    ``config_entry``), ``axis`` ``label_fraction`` or ``k_shot``, ``x`` the point on it.

    A configuration with label-fraction points also gets its full-data cell as the point 1.0;
    k-shot curves have no full-data point (k images per class is not a fraction of the data).
    """
    cells = list(cells)
    with_fractions = {(c.dataset, c.config_entry) for c in cells if c.curve_axis == "label_fraction"}
    rows = []
    for c in cells:
        if c.curve_axis is not None:
            axis, x = c.curve_axis, c.curve_value
        elif (c.dataset, c.config_entry) in with_fractions:
            axis, x = "label_fraction", 1.0
        else:
            continue
        value = (((c.metrics.get("splits") or {}).get(split) or {}).get("metrics") or {}).get(metric) or {}
        if value.get("value") is None:
            continue
        rows.append({"dataset": c.dataset, "paradigm": c.paradigm, "curve": c.config_entry, "axis": axis,
                     "x": float(x), "seed": c.seed, "value": float(value["value"])})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    idx = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    m = len(idx)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for k, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def delong_table(cells: list[CellRecord], summary: pd.DataFrame, dataset: str, top_k: int = 5,
                 split: str = "test") -> pd.DataFrame:
    """Paired DeLong tests of AUROC between the ``top_k`` entries of ``dataset`` (by AUROC).

    Each entry is represented by its lowest seed; two entries are compared on the images both
    scored (normally all test images). p-values are Holm-adjusted over the pairs of the dataset.
    """
    from ..metrics import delong_test

    board = leaderboard(summary, dataset, "auroc", split, also=())
    board = board[board["value"].notna()].head(top_k)
    by_entry: dict[str, CellRecord] = {}
    for c in sorted(cells, key=lambda c: c.seed):
        if c.dataset == dataset and c.entry not in by_entry:
            by_entry[c.entry] = c
    frames = {}
    for entry in board["entry"]:
        pred = by_entry[entry].predictions(split) if entry in by_entry else None
        if pred is not None:
            frames[entry] = pred[["img_id", "label", "p_malignant"]]
    entries = [e for e in board["entry"] if e in frames]
    rows = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            joined = frames[a].merge(frames[b], on="img_id", suffixes=("_a", "_b"))
            row = {"dataset": dataset, "model_a": a, "model_b": b, "seed_a": by_entry[a].seed,
                   "seed_b": by_entry[b].seed, "n": len(joined)}
            try:
                if (joined["label_a"] != joined["label_b"]).any():
                    raise ValueError("the two cells disagree on labels")
                res = delong_test(joined["label_a"].to_numpy(), joined["p_malignant_a"].to_numpy(),
                                  joined["p_malignant_b"].to_numpy())
                row.update({"auc_a": res["auc_a"], "auc_b": res["auc_b"], "diff": res["diff"],
                            "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p_value": _num(res["p_value"]),
                            "note": ""})
            except ValueError as exc:
                row.update({"auc_a": math.nan, "auc_b": math.nan, "diff": math.nan, "ci_low": math.nan,
                            "ci_high": math.nan, "p_value": math.nan, "note": str(exc)})
            rows.append(row)
    out = pd.DataFrame(rows, columns=["dataset", "model_a", "model_b", "seed_a", "seed_b", "n", "auc_a", "auc_b",
                                      "diff", "ci_low", "ci_high", "p_value", "note"])
    out.insert(out.columns.get_loc("p_value") + 1, "p_holm", holm(out["p_value"].tolist()) if len(out) else [])
    return out
