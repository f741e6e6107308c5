"""Find the run records under a runs folder and read them into one table per kind of result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import UsageError
from ..runs.record import COMPLETE, read_metrics, verify_complete
from ..utils.console import get_logger
from ..utils.yamlio import load_yaml

_log = get_logger("report")


@dataclass
class CellRecord:
    """One complete cell: its identity (from the run record), metrics and folder.

    ``config_label`` names the configuration (model + variant: one report row); ``label`` names
    the cell, which adds the curve point (``+frac0.1``, ``+5shot``) when it is one.
    """

    path: Path
    experiment: str
    paradigm: str
    model: str
    variant: str
    dataset: str
    seed: int
    metrics: dict[str, Any]
    config_label: str = ""
    label: str = ""
    curve_axis: str | None = None   # "label_fraction" | "k_shot" | None
    curve_value: float | None = None
    entry: str = ""         # how the report names the cell: paradigm/label (+ experiment)
    config_entry: str = ""  # how the report names its configuration: paradigm/config_label (+ experiment)
    label_definition: str = ""  # the dataset's label definition (prepare --labels): complete | study | "" unknown
    split_grouping: str = ""    # grouped | ungrouped (the study's leaky image-level split) | official | "" unknown
    split_seed: int | None = None  # the dataset re-split with this seed (grid split_seeds); None: its own split

    @property
    def is_full_data(self) -> bool:
        """True for the cells the report ranks: not a curve point, or the curve's full-data point
        (label fraction 1). A k-shot cell is always a curve point."""
        return self.curve_axis is None or (self.curve_axis == "label_fraction" and self.curve_value == 1.0)

    @property
    def extra(self) -> dict[str, Any]:
        return self.metrics.get("extra") or {}

    def predictions(self, split: str = "test") -> pd.DataFrame | None:
        file = self.path / f"predictions_{split}.csv"
        if not file.is_file():
            return None
        return pd.read_csv(file, dtype={"img_id": str})

    def subgroups(self) -> pd.DataFrame | None:
        file = self.path / "subgroups.csv"
        if not file.is_file():
            return None
        return pd.read_csv(file)


@dataclass
class IncompleteCell:
    path: Path
    state: str     # "failed" | "partial" | "corrupt" (a file does not match what COMPLETE vouches for)
    error: str = ""


@dataclass
class RunsIndex:
    root: Path
    cells: list[CellRecord] = field(default_factory=list)
    incomplete: list[IncompleteCell] = field(default_factory=list)


def _cell_folders(root: Path) -> list[Path]:
    """Folders that hold a cell: they have a config.yaml (written first) or a marker."""
    found = {p.parent for p in root.rglob("config.yaml")} | {p.parent for p in root.rglob(COMPLETE)}
    return sorted(f for f in found if f.name.startswith("seed") and "work" not in f.relative_to(root).parts)


def collect_runs(root: str | Path) -> RunsIndex:
    """Every cell under ``root``: complete ones with their metrics, the others as failed/partial."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"runs folder {root} does not exist (run `dermbench run CONFIG` first)")
    index = RunsIndex(root)
    for folder in _cell_folders(root):
        problem = verify_complete(folder)
        if problem is None:
            error_file = folder / "error.txt"
            if error_file.is_file():
                lines = [ln for ln in error_file.read_text(errors="replace").strip().splitlines() if ln.strip()]
                index.incomplete.append(IncompleteCell(folder, "failed", lines[-1] if lines else ""))
            else:
                index.incomplete.append(IncompleteCell(folder, "partial"))
            continue
        if not problem:
            try:
                index.cells.append(_read_cell(folder, root))
                continue
            except (OSError, ValueError, yaml.YAMLError) as exc:  # a record the marker could not vouch for
                problem = f"{folder} cannot be read ({type(exc).__name__}: {exc})"
        _log.warning("report: left out %s: %s (re-run the grid to redo the cell)", folder, problem)
        index.incomplete.append(IncompleteCell(folder, "corrupt", problem))
    experiments = {c.experiment for c in index.cells}
    for c in index.cells:
        prefix = f"{c.experiment}:" if len(experiments) > 1 else ""
        c.config_entry = f"{prefix}{c.paradigm}/{c.config_label}"
        c.entry = c.config_entry if c.is_full_data else f"{prefix}{c.paradigm}/{c.label}"
    return index


def _read_cell(folder: Path, root: Path) -> CellRecord:
    try:
        metrics = read_metrics(folder)
    except ValueError as exc:
        raise ValueError(f"{folder / 'metrics.json'} is not valid JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{folder / 'metrics.json'} does not hold a metrics mapping")
    spec = metrics.get("cell") or {}
    config_file = folder / "config.yaml"
    if config_file.is_file():
        try:
            spec = {**(load_yaml(config_file.read_text(encoding="utf-8")) or {}), **spec}
        except yaml.YAMLError as exc:
            raise ValueError(f"{config_file} is not valid YAML ({exc})") from None
    # identity from the cell spec; the folder layout runs/<exp>/<paradigm>/<model>/<dataset>/seedK
    # is the fallback for records written by hand
    parts = folder.relative_to(root).parts
    fallback = dict(zip(("experiment", "paradigm", "model", "dataset"), parts[-5:-1])) if len(parts) >= 5 else {}
    dataset = spec.get("dataset")
    dataset_name = Path(str(dataset)).name if dataset else (metrics.get("dataset") or {}).get("name") \
        or fallback.get("dataset", "?")
    seed_text = folder.name[4:]
    identity = read_identity(metrics, spec, fallback.get("model", "?"))
    return CellRecord(
        path=folder,
        experiment=str(spec.get("experiment") or fallback.get("experiment", "")),
        paradigm=str(spec.get("paradigm") or fallback.get("paradigm", "?")),
        model=identity["model"],
        variant=identity["variant"],
        dataset=str(dataset_name),
        seed=int(spec.get("seed", int(seed_text) if seed_text.isdigit() else 0)),
        metrics=metrics,
        config_label=identity["config_label"],
        label=identity["label"],
        curve_axis=identity["curve_axis"],
        curve_value=identity["curve_value"],
        label_definition=str((metrics.get("dataset") or {}).get("label_definition") or ""),
        split_grouping=str((metrics.get("dataset") or {}).get("split_grouping") or ""),
        split_seed=None if spec.get("split_seed") is None else int(spec["split_seed"]),
    )


def read_identity(metrics: dict[str, Any], spec: dict[str, Any], folder_model: str = "?") -> dict[str, Any]:
    """The cell's ``identity`` (model, variant, config_label, label, curve_axis, curve_value).

    Run records carry it (``identity`` in ``config.yaml``, ``cell.identity`` in ``metrics.json``);
    a record written before they did is read from its model, variant and settings instead
    (:func:`identity_from_variant`).
    """
    for source in (metrics.get("identity"), (metrics.get("cell") or {}).get("identity"), spec.get("identity")):
        if isinstance(source, dict) and source.get("model"):
            model, variant = str(source["model"]), str(source.get("variant") or "")
            config_label = str(source.get("config_label") or "+".join(p for p in (model, variant) if p))
            axis = source.get("curve_axis") or None
            value = _curve_value(axis, source.get("curve_value"))
            return {"model": model, "variant": variant, "config_label": config_label,
                    "label": str(source.get("label") or config_label), "curve_axis": axis, "curve_value": value}
    return identity_from_variant(str(spec.get("model") or folder_model), str(spec.get("variant") or ""),
                                 spec.get("settings") or {})


def identity_from_variant(model: str, variant: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The identity of a record without one: a ``fracX`` or ``Nshot`` part of its variant (the
    old folder label, ``resnet18+logreg+frac0.1``) is its curve point, the rest its configuration.
    Without such a part, a ``k_shot`` or a ``label_fraction`` below 1 in its settings is the point."""
    kept, axis, value = [], None, None
    for part in (p for p in variant.split("+") if p):
        fraction = re.fullmatch(r"frac(\d*\.?\d+(?:e-?\d+)?)", part)
        shots = re.fullmatch(r"(\d+)shot", part)
        if fraction and axis is None:
            axis, value = "label_fraction", float(fraction.group(1))
        elif shots and axis is None:
            axis, value = "k_shot", int(shots.group(1))
        else:
            kept.append(part)
    if axis is None and settings.get("k_shot") is not None:
        axis, value = "k_shot", int(settings["k_shot"])
    elif axis is None and settings.get("label_fraction") not in (None, 1, 1.0):
        axis, value = "label_fraction", float(settings["label_fraction"])
    config_label = "+".join([model, *kept])
    point = {"label_fraction": f"frac{value:g}" if axis == "label_fraction" else "",
             "k_shot": f"{value}shot"}.get(axis or "", "")
    return {"model": model, "variant": "+".join(kept), "config_label": config_label,
            "label": "+".join(p for p in (config_label, point) if p), "curve_axis": axis, "curve_value": value}


def _curve_value(axis: str | None, value: Any) -> float | int | None:
    if axis is None or value is None:
        return None
    return int(value) if axis == "k_shot" else float(value)
