"""Where dermbench keeps caches: ``$DERMBENCH_CACHE`` or ``$XDG_CACHE_HOME/dermbench``."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (not created): ``$DERMBENCH_CACHE``, else ``$XDG_CACHE_HOME/dermbench``."""
    base = os.environ.get("DERMBENCH_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "dermbench")
    return Path(base)


def cache_dir(*parts: str) -> Path:
    path = Path(cache_root(), *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(name: str) -> str:
    """A file-system-safe, readable version of a model or dataset name (``hf-hub:a/b`` -> ``hf-hub_a_b``)."""
    cleaned = _UNSAFE.sub("_", str(name)).strip("._")
    return cleaned or "unnamed"


def file_in_the_way(path: str | Path) -> Path | None:
    """The first existing part of ``path`` (from the root down, ``path`` itself included) that is
    not a folder: a file where a folder has to go. None when there is none."""
    path = Path(path).absolute()
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
        if not part.exists():
            return None
    return None


def writable_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder this process can write files in (created if missing), or a
    :class:`~dermbench.errors.UsageError` that says why not: a file where the folder (or one above
    it) goes, or a folder that cannot be created or written (permissions, a read-only file system).
    ``what`` names it in the message (``runs folder``, ``--out``)."""
    import tempfile

    from ..errors import UsageError

    path = Path(path)
    blocking = file_in_the_way(path)
    if blocking is not None:
        where = "is a file" if blocking == path.absolute() else f"cannot be created: {blocking} is a file"
        raise UsageError(f"{what} {path} {where}, not a folder; name a folder (or move the file away)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dermbench-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be written ({exc.strerror or exc}); choose a folder you can "
                         f"write to") from None
    return path
