"""Expand a :class:`~dermbench.runner.config.RunConfig` into the cells of the grid.

A block runs ``models × datasets × seeds × variants`` (a variant is a finetune balancing mode,
a probe head or a zeroshot prompt set). Cells are ordered model → dataset → seed → variant so
that the cells sharing a model's cached work (a probe backbone's embeddings, a dual encoder's
image features) run next to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.record import is_complete
from .cell import CellSpec, changed_fields
from .config import Resources, RunConfig


@dataclass
class PlannedCell:
    """A cell of the grid and what it asks of a worker (not part of its identity)."""

    spec: CellSpec
    resources: Resources = field(default_factory=Resources)

    @property
    def key(self) -> str:
        """``paradigm/model+variant/dataset/seedK``: how progress lines and summaries name a cell."""
        s = self.spec
        return f"{s.paradigm}/{s.model_label}/{s.dataset_name}/seed{s.seed}"


def expand_grid(config: RunConfig, *, data_root: str | Path | None = None,
                quiet: bool = False) -> list[PlannedCell]:
    """Every cell of the config, in run order, each with its settings already validated."""
    paths = config.dataset_paths(data_root)
    cells: list[PlannedCell] = []
    seen: dict[str, int] = {}
    for index, block in enumerate(config.grid):
        dataset_names = block.datasets or list(paths)
        seeds = block.seeds or config.seeds
        resources = block.resources or config.resources
        for model in block.model_names():
            variants = block.cell_variants(model)
            for dataset in dataset_names:
                for seed in seeds:
                    for variant, settings in variants:
                        spec = CellSpec(
                            experiment=config.experiment, paradigm=block.paradigm_name, model=model,
                            dataset=str(paths[dataset]), seed=int(seed), variant=variant,
                            settings=dict(settings),
                            threshold_policy=block.threshold_policy or config.threshold_policy,
                            n_boot=config.n_boot, device=config.device, strict=config.strict, quiet=quiet,
                            threads=max(1, math.ceil(resources.num_cpus)))
                        # two cells must never share a folder (names are made file-system safe there)
                        identity = str(spec.path("")).lower()
                        if identity in seen:
                            raise ValueError(f"grid[{index}] repeats the cell {identity} of grid[{seen[identity]}] "
                                             f"(same paradigm, model+variant, dataset and seed); each cell must "
                                             f"appear once")
                        seen[identity] = index
                        cells.append(PlannedCell(spec, resources))
    return cells


def cell_state(cell: PlannedCell, runs_root: str | Path) -> str:
    """``complete``, ``changed`` (complete, but recorded with other settings: redone on run),
    ``failed`` (error.txt, no marker), ``partial`` (started, no marker) or ``todo``."""
    path = cell.spec.path(runs_root)
    if is_complete(path):
        return "changed" if changed_fields(cell.spec, path) else "complete"
    if (path / "error.txt").is_file():
        return "failed"
    if path.is_dir():
        return "partial"
    return "todo"


def grid_table(cells: list[PlannedCell], runs_root: str | Path) -> list[dict[str, Any]]:
    """One row per cell for ``--dry-run``: identity, resources and current state."""
    rows = []
    for c in cells:
        s = c.spec
        rows.append({"paradigm": s.paradigm, "model": s.model, "variant": s.variant, "dataset": s.dataset_name,
                     "seed": s.seed, "num_cpus": c.resources.num_cpus, "num_gpus": c.resources.num_gpus,
                     "state": cell_state(c, runs_root), "path": str(s.path(runs_root))})
    return rows
