"""The dataset a cell runs on: the folder as prepared, or split again by the cell's split seed."""

from __future__ import annotations

from typing import Any

from ..data.dataset import LesionDataset


def load_cell_dataset(spec: Any, *, quiet: bool | None = None) -> LesionDataset:
    """Load ``spec.dataset`` (strict/quiet as the cell asks) and, when ``spec.split_seed`` is set,
    re-split it with that seed by the same policy (:func:`dermbench.data.resplit.resplit`). Every
    paradigm loads its dataset through here, so a grid's ``split_seeds`` mean the same everywhere."""
    from ..data.contract import load_dataset

    dataset = load_dataset(spec.dataset, strict=spec.strict, quiet=spec.quiet if quiet is None else quiet)
    split_seed = getattr(spec, "split_seed", None)
    if split_seed is None:
        return dataset
    from ..data.resplit import resplit

    return resplit(dataset, int(split_seed))
