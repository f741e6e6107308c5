"""Which files of a report folder the report wrote, so that a new report removes the files an
earlier one wrote and this one did not (a dataset or a cell that is gone, error pages switched off).

The report folder is the user's: only a file the previous report wrote, and that nobody changed
since, is removed. The list lives in ``.dermbench-report.json`` (path -> size and mtime as written);
a file the user added or edited is never on it, or no longer matches it, so it is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils.atomic import atomic_write_text

MANIFEST = ".dermbench-report.json"

Stamp = tuple[int, int]  # (size, mtime_ns)


def snapshot(out: Path) -> dict[str, Stamp]:
    """Every file under ``out`` (relative POSIX path -> size and mtime)."""
    files: dict[str, Stamp] = {}
    if not out.is_dir():
        return files
    for dirpath, _dirs, names in os.walk(out):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue
            files[path.relative_to(out).as_posix()] = (st.st_size, st.st_mtime_ns)
    files.pop(MANIFEST, None)
    return files


def remove_stale(out: Path, before: dict[str, Stamp]) -> list[str]:
    """After a report was written into ``out`` (``before``: :func:`snapshot` taken first): remove
    the files the previous report wrote that this one did not rewrite and that are unchanged since,
    record what this report wrote, and return the removed paths (relative to ``out``)."""
    after = snapshot(out)
    written = {rel: stamp for rel, stamp in after.items() if before.get(rel) != stamp}
    try:
        previous = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    removed = []
    for rel, stamp in sorted(previous.items()):
        if rel in written or rel not in after or list(after[rel]) != list(stamp):
            continue
        try:
            (out / rel).unlink()
        except OSError:
            continue
        removed.append(rel)
        _remove_empty_parents(out, (out / rel).parent)
    atomic_write_text(out / MANIFEST, json.dumps({"files": {rel: list(s) for rel, s in sorted(written.items())}},
                                                indent=0) + "\n")
    return removed


def _remove_empty_parents(out: Path, folder: Path) -> None:
    while folder != out and out in folder.parents:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return
        folder = folder.parent
