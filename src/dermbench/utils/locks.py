"""One inter-process lock for caches that several processes may build at once."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[bool]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (created if needed), yielding True.

    Where locking is unsupported (not POSIX, some network file systems) it yields False: callers
    must then stay correct without it (write atomically, let one complete result win)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
