"""Values computed from a file's content, remembered while the file is unchanged.

Hashing 10,000 images or a 1 GB checkpoint on every run would be slow, so the result of such a
computation (a sha256, a decode check) is stored in the user cache next to the file's *stamp* and
reused while the stamp is the same.

The stamp is (size, mtime_ns, ctime_ns, inode, device). Size and mtime alone are not enough: a
file copied in with its old mtime (``cp -p``, ``rsync -a``, untar) keeps both, whether it replaces
the old file (new inode) or is written into it (same inode). The ctime changes on every write,
rename or ``utime`` call and cannot be set back by a user, and the inode and device change when
the file is replaced, so any of those counts as a new file and the value is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from .atomic import atomic_write_text
from .paths import cache_dir

T = TypeVar("T")

#: Bump when the stamp or the stored layout changes: the memo folder carries it, so another
#: dermbench version never misreads these entries.
MEMO_FORMAT = 3


def file_stamp(path: str | Path) -> list[int]:
    """(size, mtime_ns, ctime_ns, inode, device) of ``path``; raises ``OSError`` when it is missing."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (not memoised; see :class:`FileStampMemo`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class FileStampMemo:
    """A JSON memo in the user cache: file path -> (stamp, value computed from the file).

    ``kind`` names what is remembered (one cache folder per kind), ``scope`` which memo file of
    that kind (e.g. a dataset root: one file per dataset keeps each memo small), and ``context``
    anything else the values depend on (e.g. the Pillow version for a decode check): a memo stored
    under another context is ignored. Values must be JSON-serialisable. Safe to share between
    threads; :meth:`save` writes it back atomically (a read-only cache only costs speed).
    """

    def __init__(self, kind: str, scope: str, *, context: str = ""):
        key = hashlib.sha256(scope.encode()).hexdigest()[:16]
        self.path = cache_dir(f"{kind}-v{MEMO_FORMAT}") / f"{key}.json"
        self.context = context
        self._lock = threading.Lock()
        self._dirty = False
        try:
            stored = json.loads(self.path.read_text())
            ok = isinstance(stored, dict) and stored.get("context") == context and isinstance(stored.get("files"), dict)
            self._files: dict[str, list[Any]] = stored["files"] if ok else {}
        except (OSError, ValueError):
            self._files = {}

    def get(self, path: str | Path, compute: Callable[[str], T]) -> T:
        """``compute(path)``, or the value remembered for this file when its stamp is unchanged.

        A file that cannot be stat'ed is computed and not remembered (``compute`` decides what a
        missing file means)."""
        key = str(path)
        try:
            stamp: list[int] | None = file_stamp(key)
        except OSError:
            stamp = None
        record = self._files.get(key)
        if stamp is not None and isinstance(record, list) and len(record) == 2 and record[0] == stamp:
            return record[1]
        value = compute(key)
        if stamp is not None:
            with self._lock:
                self._files[key] = [stamp, value]
                self._dirty = True
        return value

    def save(self) -> None:
        if not self._dirty:
            return
        with self._lock:
            payload = json.dumps({"context": self.context, "files": self._files})
            self._dirty = False
        try:
            atomic_write_text(self.path, payload)
        except OSError:
            pass  # a read-only cache only costs speed

    def __enter__(self) -> "FileStampMemo":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.save()
