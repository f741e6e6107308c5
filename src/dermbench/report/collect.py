"""Find the run records under a runs folder and read them into one table per kind of result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..runs.record import COMPLETE, is_complete, read_metrics


@dataclass
class CellRecord:
    """One complete cell: its identity (from ``config.yaml``), metrics and folder."""

    path: Path
    experiment: str
    paradigm: str
    model: str
    variant: str
    dataset: str
    seed: int
    metrics: dict[str, Any]
    entry: str = ""  # how the report names the model: paradigm/model+variant (+ experiment)

    @property
    def model_label(self) -> str:
        return f"{self.model}+{self.variant}" if self.variant else self.model

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
    state: str     # "failed" | "partial"
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
        raise FileNotFoundError(f"runs folder {root} does not exist (run `dermbench run CONFIG` first)")
    index = RunsIndex(root)
    for folder in _cell_folders(root):
        if not is_complete(folder):
            error_file = folder / "error.txt"
            if error_file.is_file():
                lines = [ln for ln in error_file.read_text(errors="replace").strip().splitlines() if ln.strip()]
                index.incomplete.append(IncompleteCell(folder, "failed", lines[-1] if lines else ""))
            else:
                index.incomplete.append(IncompleteCell(folder, "partial"))
            continue
        index.cells.append(_read_cell(folder, root))
    experiments = {c.experiment for c in index.cells}
    for c in index.cells:
        prefix = f"{c.experiment}:" if len(experiments) > 1 else ""
        c.entry = f"{prefix}{c.paradigm}/{c.model_label}"
    return index


def _read_cell(folder: Path, root: Path) -> CellRecord:
    metrics = read_metrics(folder)
    spec = metrics.get("cell") or {}
    config_file = folder / "config.yaml"
    if config_file.is_file():
        spec = {**(yaml.safe_load(config_file.read_text()) or {}), **spec}
    # identity from the cell spec; the folder layout runs/<exp>/<paradigm>/<model>/<dataset>/seedK
    # is the fallback for records written by hand
    parts = folder.relative_to(root).parts
    fallback = dict(zip(("experiment", "paradigm", "model", "dataset"), parts[-5:-1])) if len(parts) >= 5 else {}
    dataset = spec.get("dataset")
    dataset_name = Path(str(dataset)).name if dataset else (metrics.get("dataset") or {}).get("name") \
        or fallback.get("dataset", "?")
    seed_text = folder.name[4:]
    return CellRecord(
        path=folder,
        experiment=str(spec.get("experiment") or fallback.get("experiment", "")),
        paradigm=str(spec.get("paradigm") or fallback.get("paradigm", "?")),
        model=str(spec.get("model") or fallback.get("model", "?")),
        variant=str(spec.get("variant") or ""),
        dataset=str(dataset_name),
        seed=int(spec.get("seed", int(seed_text) if seed_text.isdigit() else 0)),
        metrics=metrics,
    )
