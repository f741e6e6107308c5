"""Inter-process locks: for caches that several processes may build at once, and for run cells
(two ``dermbench run`` on one runs folder never compute the same cell twice)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[bool]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (created if needed), waiting for it,
    yielding True (:func:`try_exclusive_lock` with ``wait``).

    Where locking is unsupported (not POSIX, some network file systems) it yields False: callers
    must then stay correct without it (write atomically, let one complete result win)."""
    with try_exclusive_lock(lock_path, wait=True) as state:
        yield state == HELD


#: What :func:`try_exclusive_lock` yields.
HELD, BUSY, UNSUPPORTED = "held", "busy", "unsupported"


@contextlib.contextmanager
def try_exclusive_lock(lock_path: str | Path, *, wait: bool,
                       on_wait: Callable[[str], None] | None = None) -> Iterator[str]:
    """An exclusive ``flock`` on ``lock_path`` that says who holds it.

    Yields :data:`HELD` once this process holds the lock (its pid and host are written into the
    file, so another process can name the holder), :data:`BUSY` when another process holds it and
    ``wait`` is False (nothing is held then), or :data:`UNSUPPORTED` where file locking is not
    available (the caller goes on unlocked). With ``wait`` it blocks until the holder lets go,
    calling ``on_wait(holder)`` first.

    The kernel drops a ``flock`` when its process dies, so the lock of a killed process is free at
    once: a stale lock file is simply taken over. The file itself is left in place (removing it
    while another process waits on it would let two processes hold "the" lock)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield UNSUPPORTED
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield BUSY
                return
            if on_wait is not None:
                on_wait(lock_holder(lock_path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield UNSUPPORTED
            return
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            yield HELD
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(lock_path: str | Path) -> str:
    """Who holds (or last held) a lock taken with :func:`try_exclusive_lock`: ``pid N on HOST``."""
    try:
        text = Path(lock_path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text[:200] or "another process"
