"""A completed cell's trained model, loaded back to score other images: what transfer evaluations
(:mod:`.transfer`) and ``dermbench predict`` (:mod:`.predict`) share.

A paradigm that trains something declares a scorer in its registry entry
(``PARADIGMS.add(..., scorer="module:load_scorer")``); ``load_scorer(cell, spec, metrics, device)``
returns an object with

* ``score_dataset(dataset, splits, progress=...) -> ({split: frame img_id, p_malignant}, [Exclusion])``
  — every usable image of each split scored through the same pipeline as in training (the
  paradigm's own image or embedding caches), images that fail to decode returned as exclusions;
* ``score_files(paths, progress=...) -> ({position: p_malignant}, {position: (reason, detail)})``
  — image files decoded by the same decoding and preprocessing as the training images;
* ``describe() -> dict`` — what was loaded (model, weights, saved head or checkpoint and its sha256).

The scores are the model's own (uncalibrated): the cell's recorded calibrator and operating
threshold are applied by the caller, exactly as recorded. Loading never executes code from the
cell folder: checkpoints are read with ``torch.load(weights_only=True)`` and saved heads in a safe
format after their sha256 is checked against the run record.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml

from ..data.dataset import LesionDataset
from ..data.exclusions import Exclusion
from ..errors import UsageError
from .cell import CellSpec
from .record import COMPLETE, is_complete, read_metrics


class CellScorer(Protocol):
    def score_dataset(self, dataset: LesionDataset, splits: tuple[str, ...], *, progress: bool = True
                      ) -> tuple[dict[str, pd.DataFrame], list[Exclusion]]: ...

    def score_files(self, paths: list[str], *, progress: bool = True
                    ) -> tuple[dict[int, float], dict[int, tuple[str, str]]]: ...

    def describe(self) -> dict[str, Any]: ...


def read_cell(cell: str | Path) -> tuple[CellSpec, dict[str, Any]]:
    """The spec (``config.yaml``) and ``metrics.json`` of a complete cell folder; a UsageError
    says what the folder lacks."""
    folder = Path(cell)
    if not (folder / "config.yaml").is_file():
        raise UsageError(f"{folder} is not a cell folder (no config.yaml); give the folder of a cell, "
                         f"e.g. runs/<experiment>/probe/<label>/<dataset>/seed42")
    if not is_complete(folder):
        why = "it has no COMPLETE marker" if not (folder / COMPLETE).is_file() else \
            "its files do not match its COMPLETE marker"
        raise UsageError(f"cell {folder} is not complete ({why}); run it to completion first")
    from ..utils.yamlio import load_yaml

    try:
        config = load_yaml((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:  # duplicate keys, alias bombs: as every other config dermbench reads
        raise UsageError(f"{folder / 'config.yaml'} is not a usable cell configuration ({exc}); "
                         f"run the cell again with --force") from None
    if isinstance(config, dict) and "transfer" in config:
        source = (config.get("transfer") or {}).get("source_cell") or folder.parent.parent
        raise UsageError(f"{folder} is the record of a transfer evaluation, not a trained cell; give the cell it "
                         f"evaluated: {source}")
    if not isinstance(config, dict) or not {"experiment", "paradigm", "model", "dataset"} <= set(config):
        raise UsageError(f"{folder / 'config.yaml'} does not describe a cell (no experiment, paradigm, model and "
                         f"dataset); give the folder of a cell, e.g. runs/<experiment>/probe/<label>/<dataset>/seed42")
    return CellSpec.from_dict(config), read_metrics(folder)


def load_scorer(cell: str | Path, spec: CellSpec, metrics: dict[str, Any], device: str = "auto") -> CellScorer:
    """The scorer of a complete cell of a paradigm that declares one (see the module docstring)."""
    from ..plugins import get_registry

    entry = get_registry("paradigms").entry(spec.paradigm)
    target = entry.meta.get("scorer")
    if not target:
        raise UsageError(f"{spec.paradigm} cells train no model to reuse; only cells of a paradigm with a "
                         f"trained model (finetune, probe) can score other images")
    module_name, _, attr = str(target).partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(Path(cell), spec, metrics, device)
