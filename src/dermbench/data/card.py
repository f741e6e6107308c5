"""The dataset card (``dataset.json``): what a dataset folder says about itself.

The producer (``prepare``, ``merge``, ``synth``, ``import-hdf5``) records what only it knows
(source, licence, label mapping, split and premalignant policies, rows it dropped); the loaded
dataset adds counts, the sha256 manifest and the fingerprint. :func:`card_contents` builds the
card from a loaded dataset; :func:`dermbench.data.contract.write_card` loads a folder and writes it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import DatasetError
from .dataset import LesionDataset

CARD_NAME = "dataset.json"
#: Card fields computed from the loaded dataset (never carried over from an older card).
COMPUTED_FIELDS = ("counts", "n_images", "load_exclusions", "fingerprint", "manifest", "written_by", "written_at")


def read_card(root: str | Path) -> dict[str, Any] | None:
    """The card of a dataset folder, or None when it has none; a damaged card is a :class:`DatasetError`."""
    path = Path(root) / CARD_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); re-create it with `dermbench validate "
                           f"{root} --write-card`") from exc


def card_contents(dataset: LesionDataset, info: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of ``dataset``: ``old`` card fields, updated by ``info``, plus the computed fields."""
    card: dict[str, Any] = {k: v for k, v in (old or {}).items() if k not in COMPUTED_FIELDS}
    card.setdefault("name", Path(dataset.root).name)
    card.update(info)
    card["counts"] = dataset.counts()
    card["n_images"] = int(sum(len(df) for df in dataset.splits.values()))
    card["load_exclusions"] = [e.as_dict() for e in dataset.exclusions]
    card["fingerprint"] = dataset.fingerprint
    card["manifest"] = dataset.manifest
    card["written_by"] = f"dermbench {__version__}"
    card["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return card
