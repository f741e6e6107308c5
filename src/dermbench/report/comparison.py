"""Our numbers beside the paper's: ``comparison.html`` and ``comparison_with_paper.csv``.

The study's published numbers and the mapping from each published ``(project, setting, model,
dataset)`` to one of our cells live in :mod:`dermbench.reference` (package data, cited there). For
every complete full-data cell of ours that a published row maps to, each published metric is put
beside the metric of ours it corresponds to (:func:`dermbench.reference.metric_map`): the paper's
value, ours with its 95% CI (mean over seeds; the CI is the mean of the per-seed bounds, as in the
leaderboards), the difference (ours minus the paper's) and whether the paper's value lies inside
our CI. Cells on either side without a partner are listed.

Like is compared with like only where the cells were made alike, so every row says which label
definition, split policy, operating threshold and test images our cell had, and flags each one
that differs from what the study did (``differs_from_study``). The page is written only when at
least one cell of ours matches a published row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .collect import CellRecord, RunsIndex
from .html import Table, render, table

#: The comparison table's columns, in order (comparison_with_paper.csv).
COLUMNS = ["project", "setting", "study_model", "study_dataset", "paper_metric", "paper_value", "paper_decimals",
           "experiment", "paradigm", "config_label", "dataset", "split", "our_metric", "our_value", "ci_low",
           "ci_high", "difference", "paper_in_ci", "n_seeds", "label_definition", "split_grouping", "study_split",
           "threshold", "n_benign", "n_malignant", "study_n_benign", "study_n_malignant", "differs_from_study"]
UNMATCHED_COLUMNS = ["side", "project", "setting", "study_model", "study_dataset", "experiment", "paradigm",
                     "config_label", "dataset"]

CSV_NAME = "comparison_with_paper.csv"
UNMATCHED_CSV_NAME = "comparison_with_paper_unmatched.csv"
PAGE_NAME = "comparison.html"

#: What the study did, for the flags (STUDY.md §4, §5): its label definition and operating point.
STUDY_LABELS = "study"
STUDY_THRESHOLD = "fixed:0.5"
_COUNT_METRICS = {"n_benign", "n_malignant"}


@dataclass
class _OurCell:
    """One configuration of ours on one dataset (one experiment): its seeds' records."""

    experiment: str
    paradigm: str
    config_label: str
    dataset: str
    key: tuple[str, str, str]
    records: list[CellRecord] = field(default_factory=list)

    def setting(self, *path: str) -> str:
        """The distinct values of ``metrics[path...]`` over the seeds, joined ("" when absent)."""
        values = []
        for c in self.records:
            v: Any = c.metrics
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if v not in (None, "") and str(v) not in values:
                values.append(str(v))
        return ", ".join(values)

    def value(self, split: str, metric: str) -> tuple[float, float, float, int]:
        """(mean value, mean ci_low, mean ci_high, seeds with a value) of ``metric`` on ``split``."""
        rows = [v for v in (_metric_of(c, split, metric) for c in self.records) if v is not None and _finite(v[0])]
        if not rows:
            return math.nan, math.nan, math.nan, 0
        mean = lambda i: _mean([r[i] for r in rows])  # noqa: E731
        return mean(0), mean(1), mean(2), len(rows)


@dataclass
class Comparison:
    """What the comparison found: the table of compared values and the cells without a partner."""

    rows: pd.DataFrame                 # COLUMNS
    published_unmatched: pd.DataFrame  # published cells with no run of ours (+ the cell they map to)
    ours_unmatched: pd.DataFrame       # our cells with no published row
    n_published_cells: int
    n_matched_cells: int
    citation: str

    @property
    def any_match(self) -> bool:
        return self.n_matched_cells > 0


def compare_with_paper(index: RunsIndex) -> Comparison:
    """Match the complete cells of ``index`` with the published rows and compare their metrics."""
    from .. import reference

    published = reference.study_cells()
    paper = reference.study_results()
    counts = reference.study_test_counts()
    ours = _our_cells(index.cells)

    by_key: dict[tuple[str, str, str], list[_OurCell]] = {}
    for cell in ours.values():
        by_key.setdefault(cell.key, []).append(cell)
    values = paper.groupby(reference.STUDY_KEYS, sort=False)

    rows, missing, matched_keys = [], [], set()
    for pub in published.itertuples(index=False):
        key = (pub.paradigm, pub.config_label, pub.dataset_folder)
        cells = by_key.get(key, [])
        if not cells:
            missing.append({"side": "published, no run of ours", "project": pub.project, "setting": pub.setting,
                            "study_model": pub.model, "study_dataset": pub.dataset, "experiment": "",
                            "paradigm": pub.paradigm, "config_label": pub.config_label, "dataset": pub.dataset_folder})
            continue
        matched_keys.add(key)
        metrics = reference.metric_map(pub.project)
        published_values = values.get_group((pub.project, pub.setting, pub.model, pub.dataset))
        for cell in cells:
            for metric, paper_value in zip(published_values["metric"], published_values["value"]):
                mapped = metrics.get(metric)
                if mapped is None or not mapped.ours:
                    continue
                rows.append(_row(pub, cell, metric, float(paper_value), mapped.ours, counts))

    unmatched_ours = [{"side": "ours, no published row", "project": "", "setting": "", "study_model": "",
                       "study_dataset": "", "experiment": c.experiment, "paradigm": c.paradigm,
                       "config_label": c.config_label, "dataset": c.dataset}
                      for c in ours.values() if c.key not in matched_keys]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if len(frame):
        frame = frame.sort_values(["project", "setting", "study_dataset", "study_model", "paper_metric", "experiment"],
                                  kind="mergesort").reset_index(drop=True)
    return Comparison(rows=frame, published_unmatched=pd.DataFrame(missing, columns=UNMATCHED_COLUMNS),
                      ours_unmatched=pd.DataFrame(unmatched_ours, columns=UNMATCHED_COLUMNS),
                      n_published_cells=len(published), n_matched_cells=len(matched_keys),
                      citation=reference.citation())


def _our_cells(cells: Iterable[CellRecord]) -> dict[tuple[str, str, str, str], _OurCell]:
    """Our complete full-data cells, grouped over seeds by experiment, configuration and dataset."""
    from ..reference import comparable_label

    out: dict[tuple[str, str, str, str], _OurCell] = {}
    for c in cells:
        if not c.is_full_data:
            continue
        group = (c.experiment, c.paradigm, c.config_label, c.dataset)
        if group not in out:
            key = (c.paradigm, comparable_label(c.config_label, c.model), c.dataset)
            out[group] = _OurCell(c.experiment, c.paradigm, c.config_label, c.dataset, key)
        out[group].records.append(c)
    return out


def _metric_of(c: CellRecord, split: str, metric: str) -> tuple[float, float, float] | None:
    """(value, ci_low, ci_high) of one cell: a split metric, an image count, or a study metric of
    ``extra.study_metrics`` (with its ``<name>_ci_low``/``_ci_high`` bounds when recorded)."""
    record = (c.metrics.get("splits") or {}).get(split) or {}
    if metric in _COUNT_METRICS:
        n = record.get(metric)
        return (float(n), math.nan, math.nan) if n is not None else None
    m = (record.get("metrics") or {}).get(metric)
    if isinstance(m, dict):
        return _num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high"))
    study = ((c.extra.get("study_metrics") or {}).get(split) or {})
    if metric in study:
        return _num(study[metric]), _num(study.get(f"{metric}_ci_low")), _num(study.get(f"{metric}_ci_high"))
    return None


def _row(pub: Any, cell: _OurCell, metric: str, paper_value: float, our_metric: str,
         counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    value, low, high, n_seeds = cell.value(pub.split, our_metric)
    n_benign = cell.value(pub.split, "n_benign")[0]
    n_malignant = cell.value(pub.split, "n_malignant")[0]
    study_counts = counts.get(pub.dataset_folder) if pub.split == "test" else None
    inside = None
    if _finite(low) and _finite(high) and our_metric not in _COUNT_METRICS:
        inside = bool(low - 1e-12 <= paper_value <= high + 1e-12)
    info = {"label_definition": cell.setting("dataset", "label_definition"),
            "split_grouping": cell.setting("dataset", "split_grouping"),
            "threshold": _threshold(cell)}
    return {
        "project": pub.project, "setting": pub.setting, "study_model": pub.model, "study_dataset": pub.dataset,
        "paper_metric": metric, "paper_value": paper_value, "paper_decimals": _decimals(paper_value),
        "experiment": cell.experiment, "paradigm": cell.paradigm, "config_label": cell.config_label,
        "dataset": cell.dataset, "split": pub.split, "our_metric": our_metric, "our_value": value,
        "ci_low": low, "ci_high": high, "difference": value - paper_value if _finite(value) else math.nan,
        "paper_in_ci": inside, "n_seeds": n_seeds, **info, "study_split": pub.study_split,
        "n_benign": n_benign, "n_malignant": n_malignant,
        "study_n_benign": study_counts[0] if study_counts else math.nan,
        "study_n_malignant": study_counts[1] if study_counts else math.nan,
        "differs_from_study": "; ".join(differences(info, pub.study_split, cell.setting("threshold", "policy"),
                                                    (n_benign, n_malignant), study_counts)),
    }


def differences(info: dict[str, str], study_split: str, policy: str, counts: tuple[float, float],
                study_counts: tuple[int, int] | None) -> list[str]:
    """How our cell was made otherwise than the study's: label definition, split, operating
    threshold, evaluated images (``ours ≠ study``). Empty when nothing recorded differs."""
    out = []
    labels = info.get("label_definition") or ""
    if not labels:
        out.append("labels not recorded")
    elif labels != STUDY_LABELS:
        out.append(f"labels {labels} ≠ {STUDY_LABELS}")
    grouping = info.get("split_grouping") or ""
    if not grouping:
        out.append("split not recorded")
    elif study_split == "official" and grouping != "official":
        out.append(f"split {grouping} ≠ official")
    elif study_split in ("ungrouped", "mixed") and grouping == "grouped":
        out.append("split grouped ≠ image-level")
    if policy and policy != STUDY_THRESHOLD:
        out.append(f"threshold {policy} ≠ 0.5")
    if study_counts is not None and all(_finite(v) for v in counts):
        ours = (int(counts[0]), int(counts[1]))
        if ours != tuple(study_counts):
            out.append(f"test n {sum(ours)} ({ours[0]}/{ours[1]}) ≠ {sum(study_counts)} "
                       f"({study_counts[0]}/{study_counts[1]})")
    return out


def _threshold(cell: _OurCell) -> str:
    policy, value = cell.setting("threshold", "policy"), cell.setting("threshold", "value")
    if not policy:
        return ""
    try:
        values = ", ".join(f"{float(v):.3f}" for v in value.split(", ")) if value else ""
    except ValueError:
        values = value
    return policy if policy.startswith("fixed") else f"{policy} ({values})"


def _decimals(value: float) -> int:
    """Decimals the paper printed (4 for CNN values, 2 for per-class EMB/VLM report values)."""
    text = f"{value:.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if _finite(v)]
    return sum(finite) / len(finite) if finite else math.nan


# -- the page ---------------------------------------------------------------------------------------
def write_comparison(index: RunsIndex, out: Path, write_csv: Any) -> tuple[Comparison, list[Path]]:
    """Compare, and when any cell matches write the CSVs and ``comparison.html`` under ``out``;
    ``write_csv(frame, path)`` writes a CSV atomically. Returns the comparison and the files written."""
    from ..utils.atomic import atomic_write_text

    comparison = compare_with_paper(index)
    if not comparison.any_match:
        return comparison, []
    files = [write_csv(comparison.rows, out / CSV_NAME),
             write_csv(pd.concat([comparison.published_unmatched, comparison.ours_unmatched], ignore_index=True),
                       out / UNMATCHED_CSV_NAME)]
    atomic_write_text(out / PAGE_NAME, comparison_page(comparison))
    return comparison, files + [out / PAGE_NAME]


def summary_frame(comparison: Comparison) -> pd.DataFrame:
    """Per project and setting: published cells, matched cells, compared values, how many of the
    paper's values lie inside our CI, and the values compared without any flagged difference."""
    from .. import reference

    published = reference.study_cells().groupby(["project", "setting"]).size().rename("published_cells")
    rows = comparison.rows
    if len(rows):
        keyed = rows.assign(cell=rows["study_model"] + "|" + rows["study_dataset"])
        with_ci = keyed[keyed["paper_in_ci"].notna()]
        agg = pd.DataFrame({
            "matched_cells": keyed.groupby(["project", "setting"])["cell"].nunique(),
            "values_compared": keyed.groupby(["project", "setting"]).size(),
            "with_ci": with_ci.groupby(["project", "setting"]).size(),
            "paper_inside_ci": with_ci.groupby(["project", "setting"])["paper_in_ci"].sum(),
            "without_flags": keyed[keyed["differs_from_study"] == ""].groupby(["project", "setting"]).size(),
        })
    else:
        agg = pd.DataFrame(columns=["matched_cells", "values_compared", "with_ci", "paper_inside_ci", "without_flags"])
    frame = pd.concat([published, agg], axis=1).fillna(0).reset_index()
    for c in ("published_cells", "matched_cells", "values_compared", "with_ci", "paper_inside_ci", "without_flags"):
        frame[c] = frame[c].astype(int)
    return frame


def _cells_view(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per compared pair of cells: how ours was made, and what differs from the study."""
    cells = rows.drop_duplicates(["project", "setting", "study_model", "study_dataset", "experiment",
                                  "config_label"]).copy()
    cells["our cell"] = _our_cell_names(cells)
    cells["published"] = [f"{setting} / {model}" for setting, model in zip(cells["setting"], cells["study_model"])]
    cells["images"] = [f"{split} " + ("—" if not _finite(nb) else f"{nb:.0f}/{nm:.0f}")
                       for split, nb, nm in zip(cells["split"], cells["n_benign"], cells["n_malignant"])]
    cells["split (study)"] = [f"{ours or '?'} ({study})" for ours, study in zip(cells["split_grouping"], cells["study_split"])]
    cells["differs"] = [d or "—" for d in cells["differs_from_study"]]
    return cells


def _our_cell_names(rows: pd.DataFrame) -> list[str]:
    several = rows["experiment"].nunique() > 1
    return [f"{p}/{c}" + (f" ({e})" if several else "") for p, c, e in
            zip(rows["paradigm"], rows["config_label"], rows["experiment"])]


def _value_view(rows: pd.DataFrame) -> pd.DataFrame:
    view = rows.copy()
    view["paper"] = [f"{v:.{max(d, 2)}f}" for v, d in zip(view["paper_value"], view["paper_decimals"])]
    view["ours [95% CI]"] = [_with_ci(v, lo, hi, m) for v, lo, hi, m in
                             zip(view["our_value"], view["ci_low"], view["ci_high"], view["our_metric"])]
    view["difference"] = [("—" if not _finite(d) else f"{d:+.0f}" if m in _COUNT_METRICS else f"{d:+.4f}")
                          for d, m in zip(view["difference"], view["our_metric"])]
    view["inside CI"] = ["—" if v is None or (isinstance(v, float) and math.isnan(v)) else ("yes" if v else "no")
                         for v in view["paper_in_ci"]]
    view["our cell"] = _our_cell_names(view)
    view["metric"] = [p if p == o else f"{p} → {o}" for p, o in zip(view["paper_metric"], view["our_metric"])]
    view["alike"] = ["yes" if not d else "no" for d in view["differs_from_study"]]
    return view


def _with_ci(value: float, low: float, high: float, metric: str) -> str:
    if not _finite(value):
        return "not recorded"
    if metric in _COUNT_METRICS:
        return f"{value:.0f}"
    if _finite(low) and _finite(high):
        return f"{value:.4f} [{low:.4f}, {high:.4f}]"
    return f"{value:.4f} (no CI)"


def comparison_page(comparison: Comparison) -> str:
    """The whole ``comparison.html``."""
    from .. import reference

    view = _value_view(comparison.rows)
    values: Table = table(view, ["setting", "study_dataset", "study_model", "metric", "split", "paper", "ours [95% CI]",
                                 "difference", "inside CI", "alike"],
                          headers={"study_dataset": "dataset", "study_model": "model (study)",
                                   "alike": "made alike"},
                          numeric=("paper", "ours [95% CI]", "difference"))
    cells: Table = table(_cells_view(comparison.rows),
                         ["study_dataset", "published", "our cell", "label_definition", "split (study)", "threshold",
                          "images", "differs"],
                         headers={"study_dataset": "dataset", "published": "published (setting / model)",
                                  "label_definition": "labels", "images": "images benign/malignant",
                                  "differs": "differs from the study"})
    maps = {project: reference.metric_map(project) for project in ("cnn_vit", "embeddings", "vlm")}
    mapping = pd.DataFrame([{"paper metric": name, **{f"ours ({project})": maps[project][name].ours or "—"
                                                      for project in maps},
                             "why not compared": next((m[name].why for m in maps.values() if m[name].why), "")}
                            for name in reference.mapping()["metrics"]])
    return render(
        "comparison.html", title="dermbench: compared with the paper", citation=comparison.citation,
        n_published=comparison.n_published_cells, n_matched=comparison.n_matched_cells, n_values=len(comparison.rows),
        summary=table(summary_frame(comparison), headers={"published_cells": "published cells",
                                                          "matched_cells": "matched", "values_compared": "values",
                                                          "with_ci": "with a CI", "paper_inside_ci": "paper inside our CI",
                                                          "without_flags": "values without a flagged difference"}),
        metrics=table(mapping), values=values, cells=cells,
        published_unmatched=table(comparison.published_unmatched,
                                  ["project", "setting", "study_model", "study_dataset", "paradigm", "config_label",
                                   "dataset"],
                                  headers={"study_model": "model (study)", "study_dataset": "dataset (study)",
                                           "config_label": "our cell (not run)", "dataset": "our dataset folder"})
        if len(comparison.published_unmatched) else None,
        ours_unmatched=table(comparison.ours_unmatched, ["experiment", "paradigm", "config_label", "dataset"],
                             headers={"config_label": "configuration"}) if len(comparison.ours_unmatched) else None,
        csv_name=CSV_NAME, unmatched_csv_name=UNMATCHED_CSV_NAME)
