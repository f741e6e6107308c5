"""The report's tables: tidy results, seed summaries, leaderboards, the study's summary tables
and paired DeLong comparisons. Pure functions of the collected records and frames.

Ranking rule (used everywhere an order matters): by the metric's mean over seeds in its better
direction; ties broken by the conservative CI bound (the higher lower bound for a metric where
higher is better, the lower upper bound for Brier/ECE), then by the entry name. A tie is therefore
never broken by alphabetical accident alone, and the rule is stated on every page that ranks.

What a ranking does not claim:

* **Runs.** A configuration's value is the mean over its runs: training seeds, and the dataset's
  re-splits when the grid has ``split_seeds``. Runs that gave identical numbers are one run (a
  fixed split and a deterministic head): the table says "1 run (3 seeds identical)", never
  "sd 0.000 over 3 seeds".
* **Small test sets** (:mod:`dermbench.metrics.small_sample`: fewer than 100 images or 20 of a
  class by default) are marked on every row they concern.
* **Winners.** First place is a winner only when its CI does not overlap the second's; otherwise
  the verdict is "tied within CI" and every row whose CI overlaps the first's is marked so.
* **DeLong** compares two configurations on every run both have (same split seed and training
  seed, same test images) — the runs the leaderboard's means are over: its difference and CI are
  the means over those runs (the leaderboard's own convention for CIs over seeds) and its p-value
  the largest of them (the least significant run), Holm-adjusted over the pairs of a dataset.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..metrics.small_sample import DEFAULT_RULE, SmallSampleRule
from .collect import CellRecord

#: What the report ranks: one row per configuration (model + variant). Curve points (a label
#: fraction below 1, k images per class) are drawn as curves, never ranked as models.
RANKING_SCOPE = ("one row per configuration (model and variant); label-fraction and k-shot points are "
                 "drawn as curves, not ranked")

TIE_RULE = ("ranked by mean over seeds; ties broken by the conservative CI bound (higher lower bound, "
            "or lower upper bound for Brier/ECE), then by name")

ID_COLUMNS = ["experiment", "paradigm", "model", "variant", "config_label", "curve_axis", "curve_value", "entry",
              "dataset", "label_definition", "split_grouping", "split_seed", "seed"]
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
                    "split_grouping": c.split_grouping, "split_seed": c.split_seed, "seed": c.seed, "split": split,
                    "metric": metric,
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


_SUMMARY_COLUMNS = ["value", "sd", "ci_low", "ci_high", "n_seeds", "n", "n_malignant", "n_benign", "n_splits",
                    "n_train_seeds", "identical_runs", "runs"]


def seed_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per entry × dataset × split × metric: mean and sd over runs, mean CI bounds.

    A run is one training seed on one split (the dataset's own, or a re-split by a grid's
    ``split_seeds``). With one run the CI is that cell's bootstrap CI; with several,
    ``ci_low``/``ci_high`` are the means of the per-run bootstrap bounds and ``sd`` is the spread
    over runs (ddof=1). ``n_seeds`` counts the runs where the metric is defined, i.e. the values
    the mean is over; ``n_splits`` and ``n_train_seeds`` say what they varied. When every run gave
    the same value (``identical_runs``) there is no spread to report: ``sd`` is NaN and ``runs``
    reads "1 run (3 seeds identical)". ``n``, ``n_malignant`` and ``n_benign`` are the largest test
    set over the runs.
    """
    if results.empty:
        return pd.DataFrame(columns=_SUMMARY_IDS + ["dataset", "split", "metric"] + _SUMMARY_COLUMNS)
    keys = [k for k in _SUMMARY_IDS if k in results.columns] + ["dataset", "split", "metric"]
    frame = results.copy()
    for col in ("split_seed", "n_malignant", "n_benign"):
        if col not in frame.columns:
            frame[col] = np.nan
    frame["_split_key"] = frame["split_seed"].astype(object).where(frame["split_seed"].notna(), "own")
    frame["_defined_seed"] = frame["seed"].where(frame["value"].notna()) if "seed" in frame.columns else np.nan
    frame["_defined_split"] = frame["_split_key"].where(frame["value"].notna())
    # counted before seeds identical on a split become one run: what the runs varied
    frame["_n_train_seeds"] = frame.groupby(keys, sort=False, dropna=False)["_defined_seed"].transform("nunique")
    frame = _one_run_per_identical_split(frame, keys)
    grouped = frame.groupby(keys, sort=False, dropna=False)
    out = grouped.agg(value=("value", "mean"), sd=("value", "std"), ci_low=("ci_low", "mean"),
                      ci_high=("ci_high", "mean"), n_seeds=("value", "count"), n=("n", "max"),
                      n_malignant=("n_malignant", "max"), n_benign=("n_benign", "max"),
                      n_splits=("_defined_split", "nunique"), n_train_seeds=("_n_train_seeds", "max"),
                      _collapsed=("_collapsed_split", "sum"), _min=("value", "min"), _max=("value", "max")
                      ).reset_index()
    out["identical_runs"] = (out["n_seeds"] > 1) & ((out["_max"] - out["_min"]).abs() <= 1e-12)
    out.loc[out["identical_runs"], "sd"] = np.nan
    out["runs"] = [runs_text(int(n), int(k), int(t), bool(same), int(c))
                   for n, k, t, same, c in zip(out["n_seeds"], out["n_splits"], out["n_train_seeds"],
                                               out["identical_runs"], out["_collapsed"])]
    return out.drop(columns=["_min", "_max", "_collapsed"])


def _one_run_per_identical_split(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """With several splits (``split_seeds``), the training seeds of one split whose runs are
    identical (every metric of every split the same: a deterministic head) are one run: one seed's
    rows are kept and marked ``_collapsed_split``. Otherwise the sd over splits would count each
    split once per seed and understate the spread. Judged per run, never per metric: a discrete
    metric can coincide across seeds that differ; and per configuration: seeds that differ on any
    split are no deterministic head, and their agreeing on another split is a coincidence that,
    collapsed, would weigh the splits unequally (and part from DeLong's mean over every run).
    A configuration on one split keeps its rows (the "identical runs" rule covers it)."""
    frame = frame.assign(_collapsed_split=False)
    run_keys = [k for k in keys if k not in ("split", "metric")] + ["_split_key"]
    config_keys = run_keys[:-1]
    several = frame.groupby(config_keys, sort=False, dropna=False)["_split_key"].transform("nunique") > 1
    if not several.any() or "seed" not in frame.columns:
        return frame
    per_metric = frame.groupby(run_keys + ["split", "metric"], sort=False, dropna=False)["value"]
    size, count = per_metric.transform("size"), per_metric.transform("count")
    spread = (per_metric.transform("max") - per_metric.transform("min")).abs()
    alike = (count == 0) | ((count == size) & (spread <= 1e-12))
    seeds = frame.groupby(run_keys, sort=False, dropna=False)["seed"].transform("nunique")
    same = several & (seeds > 1) & alike.groupby([frame[k] for k in run_keys], sort=False, dropna=False
                                                 ).transform("all")
    same &= same.groupby([frame[k] for k in config_keys], sort=False, dropna=False).transform("all")
    first_seed = frame.groupby(run_keys, sort=False, dropna=False)["seed"].transform("min")
    extra = same & (frame["seed"] != first_seed)
    frame.loc[same & ~extra, "_collapsed_split"] = True
    return frame[~extra]


def runs_text(n_runs: int, n_splits: int, n_seeds: int, identical: bool, identical_splits: int = 0) -> str:
    """What a summary row's mean is over: ``3 seeds``, ``3 splits × 2 seeds``, ``1 run (3 seeds
    identical)``, ``3 splits (2 seeds identical on each)`` (``identical_splits``: splits whose
    seeds gave one value, counted once)."""
    if n_runs == 0:
        return "0 runs"
    what = (f"{n_splits} splits × {n_seeds} seed{'s' if n_seeds != 1 else ''}" if n_splits > 1
            else f"{n_runs} seed{'s' if n_runs != 1 else ''}")
    if n_splits > 1 and identical_splits and n_seeds > 1:
        what = (f"{n_splits} splits ({n_seeds} seeds identical on each)" if identical_splits >= n_splits
                else f"{what} (seeds identical on {identical_splits} split(s), counted once)")
    if identical:
        return f"1 run ({what} identical)"
    return what if n_runs > 1 else "1 run"


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


def ci_overlap(low_a: Any, high_a: Any, low_b: Any, high_b: Any) -> bool:
    """True when two intervals overlap — or when either is missing (no CI: no separation shown)."""
    bounds = [_num(x) for x in (low_a, high_a, low_b, high_b)]
    if any(math.isnan(x) for x in bounds):
        return True
    return bounds[0] <= bounds[3] and bounds[2] <= bounds[1]


def _mark_small_and_ties(ranked: pd.DataFrame, rule: SmallSampleRule) -> pd.DataFrame:
    """``small_test_set`` (the rule's note, "" when large enough) and ``tied_within_ci`` (the row's
    CI overlaps the first row's; the first row too when any other does)."""
    ranked = ranked.copy()

    def column(name: str) -> pd.Series:
        return ranked[name] if name in ranked.columns else pd.Series([np.nan] * len(ranked), index=ranked.index)

    ranked["small_test_set"] = [rule.note(None if pd.isna(n) else int(n), None if pd.isna(m) else int(m),
                                          None if pd.isna(b) else int(b))
                                for n, m, b in zip(column("n"), column("n_malignant"), column("n_benign"))]
    defined = ranked["value"].notna()
    tied = [False] * len(ranked)
    if defined.sum() > 1:
        first = ranked[defined].iloc[0]
        for k, (_, row) in enumerate(ranked.iterrows()):
            if k > 0 and defined.iloc[k] and ci_overlap(first["ci_low"], first["ci_high"], row["ci_low"], row["ci_high"]):
                tied[k] = True
        tied[int(np.flatnonzero(defined.to_numpy())[0])] = any(tied)
    ranked["tied_within_ci"] = tied
    return ranked


def leaderboard(summary: pd.DataFrame, dataset: str, metric: str, split: str = "test",
                also: Iterable[str] = ("auprc", "sens_at_spec90", "balanced_accuracy", "brier"),
                rule: SmallSampleRule = DEFAULT_RULE) -> pd.DataFrame:
    """Configurations of one dataset ranked by ``metric``; a few more metrics alongside.

    Adds ``runs`` (what the mean is over), ``small_test_set`` (a note when the test set is below
    ``rule``) and ``tied_within_ci`` (the row's CI overlaps the first's: no winner between them)."""
    sub = full_data(summary[(summary["dataset"] == dataset) & (summary["split"] == split)])
    cols = ["paradigm", "entry", "value", "ci_low", "ci_high", "sd", "n_seeds", "n", "n_malignant", "n_benign",
            "runs", "identical_runs"]
    main = sub[sub["metric"] == metric][[c for c in cols if c in sub.columns]]
    ranked = _mark_small_and_ties(rank(main, metric), rule)
    for other in also:
        if other == metric:
            continue
        vals = sub[sub["metric"] == other].set_index("entry")["value"]
        ranked[other] = ranked["entry"].map(vals)
    return ranked


#: board columns that are bookkeeping, not metrics shown alongside
_BOARD_FIELDS = ("rank", "paradigm", "entry", "value", "ci_low", "ci_high", "sd", "n_seeds", "n", "n_malignant",
                 "n_benign", "runs", "identical_runs", "tied", "small_test_set", "tied_within_ci")


def rank_text(rank_: Any, tied: bool, tied_within_ci: bool) -> str:
    """``1``, ``2 (tie)`` (equal value, decided by the tie rule), ``1 (tied within CI)``, or both:
    ``2 (tie; tied within CI)``."""
    marks = [m for m, on in (("tie", tied), ("tied within CI", tied_within_ci)) if on]
    return f"{rank_} ({'; '.join(marks)})" if marks else str(rank_)


def verdict(board: pd.DataFrame) -> str:
    """One line on the top of a ranked board: who is first, and whether that is a win."""
    defined = board[board["value"].notna()]
    if defined.empty:
        return "no configuration has a value"
    first = defined.iloc[0]
    if len(defined) == 1:
        return f"{first['entry']} (the only configuration)"
    others = [e for e in defined[defined["tied_within_ci"]]["entry"] if e != first["entry"]]
    if others:
        return (f"no winner: {first['entry']} is first, tied within CI with {', '.join(others)} (their 95% CIs "
                f"overlap its own)")
    return f"{first['entry']} (its 95% CI does not overlap the runner-up's)"


def leaderboard_markdown(board: pd.DataFrame, dataset: str, metric: str, split: str = "test") -> str:
    lines = [f"## {dataset} — {metric} on {split}", "", f"_{TIE_RULE}; {RANKING_SCOPE}._", "",
             f"First place: {verdict(board)}.", ""]
    small = [n for n in board.get("small_test_set", pd.Series(dtype=object)) if n]
    if small:
        lines += [f"**Small test set**: {small[0]}. Intervals are wide and rankings fragile.", ""]
    others = [c for c in board.columns if c not in _BOARD_FIELDS]
    header = ["rank", "model", "paradigm", f"{metric} [95% CI]", "sd over runs", "runs"] + others
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for _, r in board.iterrows():
        cells = [rank_text(r["rank"], r["tied"], bool(r.get("tied_within_ci", False))), _md(r["entry"]),
                 _md(r["paradigm"]), format_ci(r["value"], r["ci_low"], r["ci_high"]), fmt(r["sd"]),
                 str(r["runs"]) if "runs" in r and isinstance(r["runs"], str) else str(int(r["n_seeds"]))]
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


def overall_best(summary: pd.DataFrame, metric: str, split: str = "test",
                 rule: SmallSampleRule = DEFAULT_RULE) -> pd.DataFrame:
    """Per dataset, the best configuration overall and per paradigm: ``overall_best_by_<metric>.csv``.

    ``best`` is the first by the ranking rule; ``winner`` is it only when its CI does not overlap
    the runner-up's (else empty, and ``verdict`` reads "tied within CI"); ``small_test_set`` notes a
    test set below ``rule``."""
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
            overlap = runner is not None and ci_overlap(best["ci_low"], best["ci_high"], runner["ci_low"],
                                                        runner["ci_high"])
            if runner is None:
                decision = "only configuration"
            elif overlap:
                decision = "tied within CI"
            else:
                decision = "best (CI apart from the runner-up)"
            small = rule.note(None if pd.isna(best.get("n")) else int(best["n"]),
                              None if pd.isna(best.get("n_malignant", np.nan)) else int(best["n_malignant"]),
                              None if pd.isna(best.get("n_benign", np.nan)) else int(best["n_benign"]))
            rows.append({"dataset": dataset, "paradigm": paradigm, "metric": metric, "best": best["entry"],
                         "winner": "" if overlap else best["entry"], "verdict": decision,
                         "value": best["value"], "ci_low": best["ci_low"], "ci_high": best["ci_high"],
                         "n_seeds": int(best["n_seeds"]), "runs": best.get("runs", ""),
                         "tie_decided": bool(runner is not None and
                                             np.isclose(runner["value"], best["value"], rtol=0, atol=1e-12)),
                         "runner_up": runner["entry"] if runner is not None else "",
                         "runner_up_value": runner["value"] if runner is not None else math.nan,
                         "runner_up_ci_low": runner["ci_low"] if runner is not None else math.nan,
                         "runner_up_ci_high": runner["ci_high"] if runner is not None else math.nan,
                         "n_compared": len(ranked), "n": best.get("n"), "small_test_set": small})
    return pd.DataFrame(rows, columns=["dataset", "paradigm", "metric", "best", "winner", "verdict", "value", "ci_low",
                                       "ci_high", "n_seeds", "runs", "tie_decided", "runner_up", "runner_up_value",
                                       "runner_up_ci_low", "runner_up_ci_high", "n_compared", "n", "small_test_set"])


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

    Two entries are compared on every run both have — the same split seed and training seed, so
    the same test images — which are the runs the leaderboard's means are over: ``diff`` is the mean
    of the per-run differences (for entries with the same runs, exactly the difference of the
    leaderboard's means), ``ci_low``/``ci_high`` the means of the per-run intervals (the
    leaderboard's convention for CIs over seeds; each is clipped to [-1, 1]), ``p_value`` the largest
    per-run p (the least significant run), Holm-adjusted over the pairs of the dataset. ``runs``
    says how many runs were compared; ``note`` carries DeLong's small-sample and clipping notes.
    """
    from ..metrics import delong_test

    board = leaderboard(summary, dataset, "auroc", split, also=())
    board = board[board["value"].notna()].head(top_k)
    by_run: dict[str, dict[tuple[Any, int], CellRecord]] = {}
    for c in cells:
        if c.dataset == dataset:
            by_run.setdefault(c.entry, {})[(c.split_seed, c.seed)] = c
    entries = [e for e in board["entry"] if e in by_run]
    rows = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            common = sorted(set(by_run[a]) & set(by_run[b]), key=lambda k: (-1 if k[0] is None else k[0], k[1]))
            results, notes, n = [], [], 0
            for run in common:
                pa, pb = by_run[a][run].predictions(split), by_run[b][run].predictions(split)
                if pa is None or pb is None:
                    continue
                joined = pa[["img_id", "label", "p_malignant"]].merge(pb[["img_id", "label", "p_malignant"]],
                                                                      on="img_id", suffixes=("_a", "_b"))
                try:
                    if (joined["label_a"] != joined["label_b"]).any():
                        raise ValueError("the two cells disagree on labels")
                    res = delong_test(joined["label_a"].to_numpy(), joined["p_malignant_a"].to_numpy(),
                                      joined["p_malignant_b"].to_numpy())
                except ValueError as exc:
                    notes.append(str(exc))
                    continue
                results.append(res)
                n = max(n, len(joined))
            row: dict[str, Any] = {"dataset": dataset, "model_a": a, "model_b": b, "runs": len(results),
                                   "run_keys": "; ".join(_run_key(k) for k in common), "n": n}
            if results:
                row.update({"auc_a": float(np.mean([r["auc_a"] for r in results])),
                            "auc_b": float(np.mean([r["auc_b"] for r in results])),
                            "diff": float(np.mean([r["diff"] for r in results])),
                            "ci_low": max(-1.0, float(np.mean([r["ci_low"] for r in results]))),
                            "ci_high": min(1.0, float(np.mean([r["ci_high"] for r in results]))),
                            "p_value": float(max(_num(r["p_value"]) for r in results))})
            else:
                row.update({"auc_a": math.nan, "auc_b": math.nan, "diff": math.nan, "ci_low": math.nan,
                            "ci_high": math.nan, "p_value": math.nan})
                notes.insert(0, "no run in common" if not common else "")
            row["note"] = "; ".join(dict.fromkeys(x for x in _delong_notes(results) + notes if x))
            rows.append(row)
    out = pd.DataFrame(rows, columns=["dataset", "model_a", "model_b", "runs", "run_keys", "n", "auc_a", "auc_b",
                                      "diff", "ci_low", "ci_high", "p_value", "note"])
    out.insert(out.columns.get_loc("p_value") + 1, "p_holm", holm(out["p_value"].tolist()) if len(out) else [])
    return out


def _delong_notes(results: list[dict[str, Any]]) -> list[str]:
    """DeLong's notes over the runs of a pair, each said once: the small sample, and in how many
    runs the interval was clipped to [-1, 1] or the difference had no variance."""
    if not results:
        return []
    out = []
    small = next((r["note"].split("; ")[0] for r in results if r["note"].startswith("small sample")), "")
    if small:
        out.append(small + "; DeLong's normal approximation is poor: interval and p are rough")
    clipped = sum(bool(r.get("clipped")) for r in results)
    if clipped:
        out.append(f"interval clipped to [-1, 1] in {clipped} of {len(results)} run(s)")
    flat = sum(r["se"] <= 1e-15 for r in results)
    if flat:
        out.append(f"no variance of the difference in {flat} of {len(results)} run(s) (p = 1 when equal)")
    return out


def _run_key(key: tuple[Any, int]) -> str:
    split_seed, seed = key
    return f"seed {seed}" if split_seed is None else f"split {split_seed} seed {seed}"
