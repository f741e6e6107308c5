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
from typing import Iterable

from ..utils.filestamp import FileStampMemo, sha256_file


def image_manifest(root: str | Path, files: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each image file, keyed by its path relative to ``root/images``."""
    root = Path(root)
    images = root / "images"
    paths = sorted({Path(f) if Path(f).is_absolute() else images / f for f in files})
    with FileStampMemo("sha256", str(root.resolve())) as memo:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
            digests = list(pool.map(lambda p: memo.get(p, sha256_file), paths))
    return {p.relative_to(images).as_posix(): d for p, d in zip(paths, digests)}


def compute_fingerprint(csv_hashes: dict[str, str], manifest: dict[str, str]) -> str:
    """The dataset fingerprint: sha256 over the split CSVs' and the images' sha256."""
    payload = json.dumps({"csv": csv_hashes, "images": sorted(manifest.items())}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()

