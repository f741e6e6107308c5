"""Expand a :class:`~dermbench.runner.config.RunConfig` into the cells of the grid.

A block runs ``models × datasets × seeds × variants`` (a variant is what the paradigm's block
lists: a finetune balancing mode, a probe head and label fraction, a zeroshot prompt set). A
block's ``eval_datasets`` become each trained cell's ``CellSpec.eval_datasets`` (its own dataset
left out); for a block that trains nothing (zeroshot) they are added to its datasets. Cells
are ordered model → dataset → seed → variant so that the cells sharing a model's cached work (a
probe backbone's embeddings, a dual encoder's image features) run next to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runs.block import Resources
from ..runs.cell import CellSpec
from ..runs.record import verify_complete
from .cell import change_reasons
from .config import RunConfig


@dataclass
class PlannedCell:
    """A cell of the grid and what it asks of a worker (not part of its identity)."""

    spec: CellSpec
    resources: Resources = field(default_factory=Resources)
    #: False when neither the block nor the config sets ``resources`` (runner.placement then decides)
    resources_given: bool = True

    @property
    def key(self) -> str:
        """``paradigm/label/dataset/seedK``: how progress lines, summaries and ``--only`` name a cell."""
        return self.spec.key


def expand_grid(config: RunConfig, *, data_root: str | Path | None = None,
                quiet: bool = False) -> list[PlannedCell]:
    """Every cell of the config, in run order, each with its settings already validated.

    Two cells with the same identity, dataset and seed would share a folder: that is a
    :class:`ConfigError` naming both blocks."""
    paths = config.dataset_paths(data_root)
    cells: list[PlannedCell] = []
    seen: dict[str, int] = {}
    for index, block in enumerate(config.grid):
        dataset_names = block.datasets or list(paths)
        targets = block.evaluation_datasets(list(paths))
        if not block.reuses_trained_model:  # nothing trained to transfer: the datasets are run on
            dataset_names = dataset_names + [n for n in targets if n not in dataset_names]
            targets = []
        seeds = block.seeds or config.seeds
        split_seeds = block.split_seeds or config.split_seeds or [None]
        resources = block.resources or config.resources
        resources_given = block.resources is not None or "resources" in config.model_fields_set
        for model in block.model_names():
            variants = block.cell_settings(model)
            for dataset in dataset_names:
                for split_seed, seed in [(s, t) for s in split_seeds for t in seeds]:
                    for settings in variants:
                        spec = CellSpec(
                            experiment=config.experiment, paradigm=block.paradigm, model=model,
                            dataset=str(paths[dataset]), seed=int(seed), settings=dict(settings),
                            threshold_policy=block.threshold_policy or config.threshold_policy,
                            n_boot=config.n_boot, device=config.device, strict=config.strict, quiet=quiet,
                            threads=max(1, math.ceil(resources.num_cpus)),
                            eval_datasets=[str(paths[n]) for n in targets if n != dataset],
                            split_seed=None if split_seed is None else int(split_seed))
                        folder = str(spec.path("")).lower()  # names are made file-system safe there
                        if folder in seen:
                            raise ConfigError(
                                f"grid[{index}] repeats the cell {folder} of grid[{seen[folder]}] (same paradigm, "
                                f"model, variant, dataset and seed); each cell must appear once")
                        seen[folder] = index
                        cells.append(PlannedCell(spec, resources, resources_given))
    return cells


def cell_state(cell: PlannedCell, runs_root: str | Path) -> str:
    """``complete``, ``changed`` (complete, but recorded with other settings or another dataset
    content: redone on run), ``corrupt`` (a file does not match what its COMPLETE marker vouches
    for: redone on run), ``failed`` (error.txt, no marker), ``partial`` (started, no marker) or
    ``todo``."""
    return cell_state_and_reasons(cell, runs_root)[0]


def cell_state_and_reasons(cell: PlannedCell, runs_root: str | Path,
                           fingerprints: dict[str, str | None] | None = None) -> tuple[str, list[str]]:
    """:func:`cell_state` and why a ``changed`` or ``corrupt`` cell is redone (``fingerprints``:
    see :func:`~dermbench.runner.cell.change_reasons`)."""
    path = cell.spec.path(runs_root)
    problem = verify_complete(path)
    if problem == "":
        changed = change_reasons(cell.spec, path, fingerprints)
        return ("changed", changed) if changed else ("complete", [])
    if problem:
        return "corrupt", [problem]
    if (path / "error.txt").is_file():
        return "failed", []
    if path.is_dir():
        return "partial", []
    return "todo", []


def grid_table(cells: list[PlannedCell], runs_root: str | Path) -> list[dict[str, Any]]:
    """One row per cell for ``--dry-run``: identity, resources, current state and why it is redone."""
    rows = []
    fingerprints: dict[str, str | None] = {}  # each dataset fingerprinted once per table
    for c in cells:
        s, ident = c.spec, c.spec.identity
        state, reasons = cell_state_and_reasons(c, runs_root, fingerprints)
        rows.append({"paradigm": s.paradigm, "model": ident.model,
                     "variant": "+".join(p for p in (ident.variant, ident.point) if p),
                     "dataset": s.dataset_part, "seed": s.seed, "num_cpus": c.resources.num_cpus,
                     "num_gpus": c.resources.num_gpus, "device": s.device, "state": state, "why": reasons,
                     "path": str(s.path(runs_root))})
    return rows
