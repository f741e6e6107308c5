"""The sha256 manifest of a dataset's images and its content fingerprint.

The fingerprint is what every cache (image cache, embedding cache, run records) keys on. It is
content based: the sha256 of the split CSVs and of every image file they refer to, so copying a
dataset to another machine keeps its fingerprint and changing one pixel changes it. Per-file
hashes are memoised by file stamp (:mod:`dermbench.utils.filestamp`), so an unchanged file is
never read twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from ..utils.filestamp import FileStampMemo, sha256_file

T = TypeVar("T")
R = TypeVar("R")


def image_manifest(root: str | Path, files: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each image file, keyed by its path relative to ``root/images``."""
    images = os.path.join(os.path.abspath(root), "images")
    paths = sorted({f if os.path.isabs(f) else os.path.normpath(os.path.join(images, f))
                    for f in map(os.fspath, files)})
    with FileStampMemo("sha256", str(Path(root).resolve())) as memo:
        digests = map_in_batches(lambda p: memo.get(p, sha256_file), paths)
    return {_relative(p, images): d for p, d in zip(paths, digests)}


def _relative(path: str, images: str) -> str:
    prefix = images + os.sep
    if path.startswith(prefix):  # the usual case, by string: a Path per file is slow at 10,000 files
        return path[len(prefix):].replace(os.sep, "/")
    return Path(path).relative_to(images).as_posix()


def map_in_batches(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on a thread pool, a few batches per thread rather than a task per
    item: a memoised value (one stat) costs less than a thread hand-off, and a warm dataset of
    10,000 images would otherwise spend a large share of its time there."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    if len(items) < 2 * workers:
        return [fn(x) for x in items]
    size = -(-len(items) // (workers * 4))
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [value for batch in pool.map(lambda b: [fn(x) for x in b], batches) for value in batch]


def compute_fingerprint(csv_hashes: dict[str, str], manifest: dict[str, str]) -> str:
    """The dataset fingerprint: sha256 over the split CSVs' and the images' sha256."""
    payload = json.dumps({"csv": csv_hashes, "images": sorted(manifest.items())}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()

