"""Provenance recorded with every cell: what produced these numbers."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from ..data.dataset import LesionDataset

_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "pillow", "torch", "torchvision", "timm",
             "open-clip-torch", "transformers", "xgboost-cpu", "xgboost", "tensorflow", "httpx", "ray")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can change results (read from metadata, no import)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Commit of the dermbench source tree (``+dirty`` when it has uncommitted changes)."""
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


#: Fields PRODUCT §7 requires in every record; a paradigm that does not pass one gets "not recorded"
#: (visible in metrics.json) rather than a silently missing key.
REQUIRED_FIELDS = ("device", "dtype", "batch_size", "weights", "dataset_fingerprint")
NOT_RECORDED = "not recorded"


def collect_provenance(**fields: Any) -> dict[str, Any]:
    """Provenance of a cell. ``fields`` adds what the paradigm knows: ``device``, ``dtype``,
    ``batch_size``, ``weights`` (identity string or "random init"), ``dataset_fingerprint``..."""
    for name in REQUIRED_FIELDS:
        if fields.get(name) is None:
            fields[name] = NOT_RECORDED
    torch_info: dict[str, Any] = {}
    if "torch" in sys.modules:  # never import torch just to describe it
        torch = sys.modules["torch"]
        torch_info = {"torch_threads": torch.get_num_threads(),
                      "cuda_available": bool(torch.cuda.is_available())}
    return {
        "dermbench_version": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        **torch_info,
        **fields,
    }


def card_essentials(dataset: LesionDataset) -> dict[str, Any]:
    """What a run record carries of its dataset's card (``dataset.json``): source and licence,
    label definition and mapping, the premalignant policy, the rows ``prepare`` excluded (by reason,
    of how many read), subsampling, the split policy and seed (and a re-split by ``split_seeds``),
    ``--group-similar``. Fields a card does not have are None (a hand-made dataset), never guessed."""
    card = dict(getattr(dataset, "card", None) or {})
    excluded = card.get("excluded") or []
    by_reason: dict[str, int] = {}
    for entry in excluded if isinstance(excluded, list) else []:
        if isinstance(entry, dict) and entry.get("reason"):
            by_reason[str(entry["reason"])] = by_reason.get(str(entry["reason"]), 0) + int(entry.get("count") or 0)
    split_policy = card.get("split_policy")
    resplit = card.get("resplit")
    similar = card.get("group_similar")
    return {
        "source": card.get("source"),
        "source_title": card.get("source_title"),
        "licence": card.get("licence"),
        "url": card.get("url"),
        "label_definition": card.get("label_definition"),
        "label_definition_note": card.get("label_definition_note"),
        "label_source": card.get("label_source"),
        "label_mapping": card.get("label_mapping"),
        "premalignant_policy": card.get("premalignant_policy"),
        "prepare_exclusions": {"count": int(sum(by_reason.values())), "by_reason": by_reason,
                               "rows_read": card.get("rows_read"),
                               "recorded": "excluded" in card,  # False: the card says nothing (not "0 excluded")
                               "file": "excluded.csv (in the dataset folder)" if by_reason else None},
        "subsampling": card.get("subsampling") or None,
        "split": {"policy": split_policy if isinstance(split_policy, str) else
                  (None if split_policy is None else
                   "; ".join(f"{k} {v}" for k, v in split_policy.items()) if isinstance(split_policy, dict)
                   else str(split_policy)),
                  "grouping": card.get("split_grouping"), "seed": card.get("seed"),
                  "counts": card.get("split_counts") or None,
                  "split_seed": resplit.get("split_seed") if isinstance(resplit, dict) else None,
                  "resplit": resplit if isinstance(resplit, dict) else None},
        "group_similar": ({k: similar.get(k) for k in ("backbone", "threshold", "pairs", "groups", "images_grouped")}
                          if isinstance(similar, dict) else None),
        "written_by": card.get("written_by"),
    }
