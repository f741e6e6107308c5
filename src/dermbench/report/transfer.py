"""The report's transfer section: how each model does on datasets it was not trained on, and how
well its probabilities are calibrated (issue 13).

Transfer records live inside their trained cell (``<cell>/transfer/<dataset>/``,
:mod:`dermbench.runs.transfer`); they are read here as :class:`~.collect.CellRecord` whose
``dataset`` is the test dataset, and their identity names the training dataset. From them and the
in-domain cells the section builds, per configuration (one row of the leaderboards):

* a **transfer matrix**: training datasets (rows) × test datasets (columns), test AUROC with its
  95% CI (mean over seeds), coloured; the diagonal is the in-domain cell itself;
* the **in-domain vs off-diagonal drop**: mean AUROC on the diagonal, off it, and the difference;

and across configurations:

* a **modality summary** (dermoscopic → clinical and every other pair of the datasets'
  modalities, :func:`dermbench.runs.transfer.dataset_modality`): mean in-domain AUROC of the
  training cells, mean AUROC under transfer, mean drop;
* per (training dataset, test dataset) pair, the **best configuration** (the leaderboards' ranking
  rule: mean over seeds, ties by the conservative CI bound, then by name);
* **calibration**: every calibrated cell and transfer record, ECE and Brier before and after, with
  reliability diagrams before/after.

``results.csv`` gains ``train_dataset`` and ``test_dataset`` (both the cell's dataset for an
in-domain cell) and one row per transfer record × split × metric. Leaderboards, summaries and
DeLong tests stay in-domain: a transfer result never competes on a dataset's leaderboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..utils.console import get_logger
from ..utils.paths import safe_name
from .collect import CellRecord, IncompleteCell, RunsIndex, _read_cell
from .html import Table, fmt, table
from .tables import format_ci, rank, results_frame

_log = get_logger("report")

#: test metric the matrices show
MATRIX_METRIC = "auroc"
#: reliability diagrams drawn at most (calibrated cells and transfer records)
MAX_RELIABILITY = 8


@dataclass
class TransferData:
    """The transfer records of a runs folder and what the report computed from them."""

    records: list[CellRecord] = field(default_factory=list)
    failed: list[IncompleteCell] = field(default_factory=list)
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)      # one row per entry x train x test
    drops: pd.DataFrame = field(default_factory=pd.DataFrame)
    modality: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.records or self.failed or len(self.calibration))


def train_dataset(record: CellRecord) -> str:
    """The dataset a record's model was trained on (its own dataset for an in-domain cell)."""
    identity = record.metrics.get("identity") or {}
    return str(identity.get("train_dataset") or record.dataset)


def collect_transfers(index: RunsIndex) -> TransferData:
    """Every transfer record under the runs folder: complete ones as records, others as failed."""
    from ..runs.record import verify_complete
    from ..runs.transfer import TRANSFER_DIR

    data = TransferData()
    experiments = {c.experiment for c in index.cells}
    folders = sorted({p.parent for p in index.root.rglob(f"{TRANSFER_DIR}/*/config.yaml")})
    for folder in folders:
        problem = verify_complete(folder)
        if problem == "":
            try:
                record = _read_cell(folder, index.root)
            except (OSError, ValueError) as exc:
                problem = f"{folder} cannot be read ({type(exc).__name__}: {exc})"
                _log.warning("report: left out transfer record %s: %s (re-run the grid to redo it)", folder, problem)
                data.failed.append(IncompleteCell(folder, "corrupt", problem))
                continue
            experiments.add(record.experiment)
            data.records.append(record)
            continue
        error = folder / "error.txt"
        lines = [ln for ln in error.read_text(errors="replace").splitlines() if ln.strip()] if error.is_file() else []
        if problem and not lines:  # files COMPLETE vouched for changed: said on the console, as for a cell
            _log.warning("report: left out transfer record %s: %s (re-run the grid to redo it)", folder, problem)
        data.failed.append(IncompleteCell(folder, "failed" if lines else ("corrupt" if problem else "partial"),
                                          lines[-1] if lines else (problem or "")))
    for record in data.records:
        prefix = f"{record.experiment}:" if len(experiments) > 1 else ""
        record.config_entry = f"{prefix}{record.paradigm}/{record.config_label}"
        record.entry = record.config_entry if record.is_full_data else f"{prefix}{record.paradigm}/{record.label}"
    return data


def results_with_transfers(results: pd.DataFrame, data: TransferData) -> pd.DataFrame:
    """``results.csv``: the in-domain rows and the transfer rows, with ``train_dataset`` and
    ``test_dataset`` after ``dataset`` (which is the test dataset)."""
    def with_columns(frame: pd.DataFrame, train: list[str]) -> pd.DataFrame:
        frame = frame.copy()
        at = frame.columns.get_loc("dataset") + 1
        frame.insert(at, "train_dataset", train)
        frame.insert(at + 1, "test_dataset", frame["dataset"].to_numpy())
        return frame

    in_domain = with_columns(results, list(results["dataset"]))
    parts = [in_domain]
    for record in data.records:
        rows = results_frame([record])
        parts.append(with_columns(rows, [train_dataset(record)] * len(rows)))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else in_domain


def _value(record: CellRecord, metric: str = MATRIX_METRIC, split: str = "test",
           source: dict[str, Any] | None = None) -> dict[str, Any]:
    splits = (source if source is not None else record.metrics).get("splits") or {}
    return ((splits.get(split) or {}).get("metrics") or {}).get(metric) or {}


def pair_table(index: RunsIndex, data: TransferData) -> pd.DataFrame:
    """One row per configuration entry × training dataset × test dataset (in-domain pairs for the
    training datasets of entries that have transfers): test AUROC mean over seeds with mean CI
    bounds, sensitivity/specificity at the deployment threshold, the oracle's, the in-domain
    AUROC of the training cells and the images excluded as seen in training."""
    from ..data.exclusions import TRANSFER_REASONS

    rows = []
    entries = {r.entry for r in data.records if r.is_full_data}
    trained_on = {(r.entry, train_dataset(r)) for r in data.records if r.is_full_data}
    # keyed by the names the table uses (dataset folders); a record's "name" is its card's, which
    # differs once a dataset folder is renamed or copied
    modality: dict[str, str] = {}
    for r in data.records:
        transfer = (r.extra.get("transfer") or {})
        for name, key in ((train_dataset(r), "train_dataset"), (r.dataset, "test_dataset")):
            info = transfer.get(key) or {}
            if info:
                modality[str(name)] = str(info.get("modality") or "unknown")
    for c in index.cells:
        if c.entry in entries and (c.entry, c.dataset) in trained_on and c.is_full_data:
            rows.append(_pair_row(c, c.dataset, c.dataset, {}, 0))
    for r in data.records:
        if not r.is_full_data:
            continue
        transfer = r.extra.get("transfer") or {}
        seen = sum(n for reason, n in (r.metrics.get("exclusions") or {}).get("by_reason", {}).items()
                   if reason in TRANSFER_REASONS)
        rows.append(_pair_row(r, train_dataset(r), r.dataset, transfer, seen))
    columns = ["paradigm", "entry", "train_dataset", "test_dataset", "seed", "value", "ci_low", "ci_high", "n",
               "sensitivity", "specificity", "threshold", "oracle_sensitivity", "oracle_specificity",
               "oracle_threshold", "in_domain_auroc", "excluded_seen_in_training"]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame.assign(train_modality=[], test_modality=[], n_seeds=[])
    grouped = frame.groupby(["paradigm", "entry", "train_dataset", "test_dataset"], as_index=False, sort=True)
    out = grouped.agg(value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
                      n_seeds=("value", "count"), n=("n", "max"), sensitivity=("sensitivity", "mean"),
                      specificity=("specificity", "mean"), threshold=("threshold", "mean"),
                      oracle_sensitivity=("oracle_sensitivity", "mean"),
                      oracle_specificity=("oracle_specificity", "mean"), oracle_threshold=("oracle_threshold", "mean"),
                      in_domain_auroc=("in_domain_auroc", "mean"),
                      excluded_seen_in_training=("excluded_seen_in_training", "max"))
    out["train_modality"] = [modality.get(d, "unknown") for d in out["train_dataset"]]
    out["test_modality"] = [modality.get(d, "unknown") for d in out["test_dataset"]]
    return out


def _pair_row(record: CellRecord, train: str, test: str, transfer: dict[str, Any], seen: int) -> dict[str, Any]:
    oracle = transfer.get("oracle") or {}
    oracle_metrics = oracle.get("splits") or {}
    test_split = (record.metrics.get("splits") or {}).get("test") or {}
    return {"paradigm": record.paradigm, "entry": record.entry, "train_dataset": train, "test_dataset": test,
            "seed": record.seed, "value": _num(_value(record).get("value")),
            "ci_low": _num(_value(record).get("ci_low")), "ci_high": _num(_value(record).get("ci_high")),
            "n": test_split.get("n"),
            "sensitivity": _num(_value(record, "sensitivity").get("value")),
            "specificity": _num(_value(record, "specificity").get("value")),
            "threshold": _num((record.metrics.get("threshold") or {}).get("value")),
            "oracle_sensitivity": _num(_value(record, "sensitivity", source=oracle).get("value")) if oracle_metrics
            else math.nan,
            "oracle_specificity": _num(_value(record, "specificity", source=oracle).get("value")) if oracle_metrics
            else math.nan,
            "oracle_threshold": _num((oracle.get("threshold") or {}).get("value")),
            "in_domain_auroc": _num(transfer.get("in_domain_test_auroc") if transfer else _value(record).get("value")),
            "excluded_seen_in_training": seen}


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def domain_drops(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per entry: mean AUROC on the diagonal (in-domain), off it (transfer), and the drop."""
    rows = []
    for (paradigm, entry), part in pairs.groupby(["paradigm", "entry"], sort=True):
        diagonal = part[part["train_dataset"] == part["test_dataset"]]["value"]
        off = part[part["train_dataset"] != part["test_dataset"]]["value"]
        rows.append({"paradigm": paradigm, "entry": entry, "in_domain": diagonal.mean(),
                     "n_in_domain": int(diagonal.count()), "transfer": off.mean(), "n_transfer": int(off.count()),
                     "drop": diagonal.mean() - off.mean() if diagonal.count() and off.count() else math.nan})
    return pd.DataFrame(rows, columns=["paradigm", "entry", "in_domain", "n_in_domain", "transfer", "n_transfer",
                                       "drop"])


def modality_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Transfer pairs grouped by the modalities of their datasets (``dermoscopic → clinical`` ...):
    how many, mean in-domain AUROC of the training cells, mean AUROC under transfer, mean drop."""
    off = pairs[pairs["train_dataset"] != pairs["test_dataset"]].copy()
    if off.empty:
        return pd.DataFrame(columns=["direction", "n_pairs", "n_models", "in_domain", "transfer", "drop"])
    off["drop"] = off["in_domain_auroc"] - off["value"]
    off["direction"] = off["train_modality"] + " → " + off["test_modality"]
    out = off.groupby("direction", as_index=False).agg(n_pairs=("value", "count"), n_models=("entry", "nunique"),
                                                       in_domain=("in_domain_auroc", "mean"),
                                                       transfer=("value", "mean"), drop=("drop", "mean"))
    first = out["direction"] == "dermoscopic → clinical"  # the question the section answers first
    return pd.concat([out[first], out[~first]], ignore_index=True)


def best_per_pair(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (training dataset, test dataset): the best entry by test AUROC, with the runner-up."""
    rows = []
    for (train, test), part in pairs.groupby(["train_dataset", "test_dataset"], sort=True):
        ranked = rank(part[["paradigm", "entry", "value", "ci_low", "ci_high"]], MATRIX_METRIC)
        ranked = ranked[ranked["value"].notna()]
        if ranked.empty:
            continue
        best = ranked.iloc[0]
        runner = ranked.iloc[1] if len(ranked) > 1 else None
        rows.append({"train_dataset": train, "test_dataset": test, "in_domain": train == test,
                     "best": best["entry"], "paradigm": best["paradigm"], "value": best["value"],
                     "ci_low": best["ci_low"], "ci_high": best["ci_high"],
                     "runner_up": runner["entry"] if runner is not None else "",
                     "runner_up_value": runner["value"] if runner is not None else math.nan,
                     "n_compared": len(ranked)})
    return pd.DataFrame(rows, columns=["train_dataset", "test_dataset", "in_domain", "best", "paradigm", "value",
                                       "ci_low", "ci_high", "runner_up", "runner_up_value", "n_compared"])


def calibration_rows(records: list[CellRecord]) -> pd.DataFrame:
    """Every calibrated record (in-domain cells and transfers): ECE and Brier on test before/after."""
    rows = []
    for r in records:
        calibration = r.metrics.get("calibration") or {}
        test = (calibration.get("splits") or {}).get("test")
        if not test and not calibration.get("note"):
            continue
        rows.append({"paradigm": r.paradigm, "entry": r.entry, "train_dataset": train_dataset(r),
                     "test_dataset": r.dataset, "seed": r.seed, "method": calibration.get("requested") or
                     calibration.get("method"), "ece_before": _num((test or {}).get("ece_before")),
                     "ece_after": _num((test or {}).get("ece_after")),
                     "brier_before": _num((test or {}).get("brier_before")),
                     "brier_after": _num((test or {}).get("brier_after")), "note": calibration.get("note", "")})
    return pd.DataFrame(rows, columns=["paradigm", "entry", "train_dataset", "test_dataset", "seed", "method",
                                       "ece_before", "ece_after", "brier_before", "brier_after", "note"])


def build_transfer(index: RunsIndex, out: Path, write_csv: Callable[[pd.DataFrame, Path], Path]
                   ) -> tuple[TransferData, list[Path]]:
    """Collect the transfer records of ``index`` and write the section's tables and figures."""
    data = collect_transfers(index)
    data.calibration = calibration_rows([*index.cells, *data.records])
    if not data.any:
        return data, []
    data.pairs = pair_table(index, data)
    data.drops = domain_drops(data.pairs) if len(data.pairs) else pd.DataFrame()
    data.modality = modality_summary(data.pairs) if len(data.pairs) else pd.DataFrame()
    data.best = best_per_pair(data.pairs) if len(data.pairs) else pd.DataFrame()
    tables = out / "tables"
    files = [write_csv(data.pairs, tables / "transfer_pairs.csv"),
             write_csv(data.best, tables / "transfer_best_per_pair.csv"),
             write_csv(data.modality, tables / "transfer_by_modality.csv"),
             write_csv(data.calibration, tables / "calibration.csv")]
    data.figures = _reliability_figures([*index.cells, *data.records], out / "plots")
    return data, files


def reliability_before_after(pred: pd.DataFrame, title: str, path: Path, bins: int = 10) -> Path | None:
    """Reliability diagram of one record's test predictions before (``p_uncalibrated``) and after
    calibration (``p_malignant``): observed malignant fraction per bin of the ECE's bins, n per point."""
    from ..metrics.calibration import reliability_table
    from .plots import _plt, _save

    if not len(pred) or "p_uncalibrated" not in pred.columns:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    y = pred["label"].to_numpy(int)
    for column, label, colour in (("p_uncalibrated", "before", "#d62728"), ("p_malignant", "after", "#1f77b4")):
        rows = reliability_table(y, pred[column].to_numpy(float), bins=bins)
        ax.plot([r["mean_p"] for r in rows], [r["observed"] for r in rows], marker="o", color=colour,
                label=f"{label} calibration")
        for r in rows:
            ax.annotate(f"{r['n']}", (r["mean_p"], r["observed"]), fontsize=6, xytext=(2, 3),
                        textcoords="offset points", color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean p_malignant in bin (n beside each point)", fontsize=8)
    ax.set_ylabel("observed malignant fraction", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _reliability_figures(records: list[CellRecord], plot_dir: Path) -> list[tuple[Path, str]]:
    """Reliability before/after calibration on test, for the first calibrated records."""
    figures = []
    calibrated = [r for r in records if ((r.metrics.get("calibration") or {}).get("splits") or {}).get("test")]
    for r in sorted(calibrated, key=lambda r: (r.entry, train_dataset(r), r.dataset, r.seed))[:MAX_RELIABILITY]:
        pred = r.predictions("test")
        if pred is None or "p_uncalibrated" not in pred.columns:
            continue
        train = train_dataset(r)
        where = r.dataset if train == r.dataset else f"{train} → {r.dataset}"
        name = safe_name(f"calibration__{r.entry}__{train}__{r.dataset}__seed{r.seed}")
        path = reliability_before_after(pred, f"{r.entry} on {where} (test, seed {r.seed})", plot_dir / f"{name}.png")
        if path is not None:
            figures.append((path, f"reliability of {r.entry} on {where} before and after calibration"))
    return figures


# ---------------------------------------------------------------------------------------------
# the page section
# ---------------------------------------------------------------------------------------------
def auroc_colour(value: float) -> str:
    """Background of a matrix cell: red at AUROC 0.5 (chance) or below, through yellow, to green at 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "#eeeeee"
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["RdYlGn"](float(np.clip((value - 0.5) / 0.5, 0.0, 1.0)) * 0.8 + 0.1))


def matrices(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """One matrix per entry: ``{"entry", "paradigm", "columns", "rows": [{"train", "cells": [...]}]}``
    with each cell's text (AUROC [CI]), colour and whether it is the diagonal."""
    out = []
    for (paradigm, entry), part in pairs.groupby(["paradigm", "entry"], sort=True):
        trains = sorted(part["train_dataset"].unique())
        tests = sorted(set(part["test_dataset"]) | set(trains), key=lambda d: (d not in trains, d))
        cells = {(r.train_dataset, r.test_dataset): r for r in part.itertuples()}
        rows = []
        for train in trains:
            row = []
            for test in tests:
                r = cells.get((train, test))
                value = r.value if r is not None else math.nan
                row.append({"text": format_ci(value, r.ci_low, r.ci_high) if r is not None else "—",
                            "colour": auroc_colour(value), "diagonal": train == test,
                            "title": (f"{entry}: trained on {train}, tested on {test}; n={fmt(r.n)}, "
                                      f"{int(r.n_seeds)} seed(s)" if r is not None else "not evaluated")})
            rows.append({"train": train, "cells": row})
        out.append({"entry": entry, "paradigm": paradigm, "columns": tests, "rows": rows,
                    "anchor": f"transfer-{safe_name(entry)}"})
    return out


def transfer_section(data: TransferData | None, rel: Callable[[Path], str | None]) -> dict[str, Any] | None:
    """What ``templates/transfer.html`` shows, or None when there is no transfer or calibration."""
    if data is None or not data.any:
        return None
    drops = data.drops.copy() if len(data.drops) else data.drops
    pairs_off = data.pairs[data.pairs["train_dataset"] != data.pairs["test_dataset"]] if len(data.pairs) else data.pairs
    return {
        "matrices": matrices(data.pairs) if len(data.pairs) else [],
        "drops": table(drops, ["entry", "paradigm", "in_domain", "n_in_domain", "transfer", "n_transfer", "drop"],
                       headers={"entry": "model", "in_domain": "in-domain AUROC (diagonal)",
                                "n_in_domain": "datasets", "transfer": "AUROC under transfer (off-diagonal)",
                                "n_transfer": "pairs", "drop": "drop"}) if len(drops) else None,
        "thresholds": _threshold_table(pairs_off) if len(pairs_off) else None,
        "modality": table(data.modality, ["direction", "n_pairs", "n_models", "in_domain", "transfer", "drop"],
                          headers={"direction": "training → test modality", "n_pairs": "pairs",
                                   "n_models": "models", "in_domain": "in-domain AUROC of the training cells",
                                   "transfer": "AUROC under transfer", "drop": "mean drop"})
        if len(data.modality) else None,
        "best": _best_table(data.best) if len(data.best) else None,
        "calibration": table(data.calibration, ["entry", "train_dataset", "test_dataset", "seed", "method",
                                                "ece_before", "ece_after", "brier_before", "brier_after", "note"],
                             headers={"entry": "model", "train_dataset": "trained on", "test_dataset": "tested on"})
        if len(data.calibration) else None,
        "figures": [(rel(path), alt) for path, alt in data.figures],
        "failed": table(pd.DataFrame([{"state": f.state, "record": str(f.path), "error": f.error}
                                      for f in data.failed])) if data.failed else None,
        "files": TRANSFER_FILES,
    }


def _threshold_table(pairs: pd.DataFrame) -> Table:
    view = pairs.copy()
    view["AUROC [95% CI]"] = [format_ci(v, lo, hi) for v, lo, hi in zip(view["value"], view["ci_low"],
                                                                         view["ci_high"])]
    return table(view, ["entry", "train_dataset", "test_dataset", "AUROC [95% CI]", "in_domain_auroc", "threshold",
                        "sensitivity", "specificity", "oracle_threshold", "oracle_sensitivity", "oracle_specificity",
                        "excluded_seen_in_training", "n"],
                 headers={"entry": "model", "train_dataset": "trained on", "test_dataset": "tested on",
                          "in_domain_auroc": "in-domain AUROC", "threshold": "threshold (training validation)",
                          "oracle_threshold": "oracle threshold (target validation)",
                          "excluded_seen_in_training": "excluded: seen in training", "n": "test images"})


def _best_table(best: pd.DataFrame) -> Table:
    view = best.copy()
    view["AUROC [95% CI]"] = [format_ci(v, lo, hi) for v, lo, hi in zip(view["value"], view["ci_low"],
                                                                         view["ci_high"])]
    return table(view, ["train_dataset", "test_dataset", "best", "paradigm", "AUROC [95% CI]", "runner_up",
                        "runner_up_value", "n_compared"],
                 headers={"train_dataset": "trained on", "test_dataset": "tested on", "best": "best model",
                          "n_compared": "models compared"})


TRANSFER_FILES = ["tables/transfer_pairs.csv", "tables/transfer_best_per_pair.csv", "tables/transfer_by_modality.csv",
                  "tables/calibration.csv"]
