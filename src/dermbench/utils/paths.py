"""Where dermbench keeps caches: ``$DERMBENCH_CACHE`` or ``$XDG_CACHE_HOME/dermbench``."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = os.environ.get("DERMBENCH_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "dermbench")
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(name: str) -> str:
    """A file-system-safe, readable version of a model or dataset name (``hf-hub:a/b`` -> ``hf-hub_a_b``)."""
    cleaned = _UNSAFE.sub("_", str(name)).strip("._")
    return cleaned or "unnamed"
