"""Provenance recorded with every cell: what produced these numbers."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__

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
