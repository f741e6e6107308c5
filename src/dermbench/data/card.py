"""The dataset card (``dataset.json``), the sha256 manifest and the dataset fingerprint.

The fingerprint is what every cache (image cache, embedding cache, run records) keys on. It is
content based: the sha256 of the three split CSVs and of every image file, so copying a dataset
to another machine keeps its fingerprint and changing one pixel changes it. Hashing 10,000
images on every load would be slow, so per-file hashes are memoised in the user cache keyed by
(absolute path, size, mtime_ns, ctime_ns, inode); an unchanged file is never re-read.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .. import SPLITS, __version__
from ..utils.atomic import atomic_write_text
from ..utils.paths import cache_dir

CARD_NAME = "dataset.json"
_HASH_LOCK = threading.Lock()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class _HashMemo:
    """Per-dataset memo of file hashes, stored under the user cache directory."""

    def __init__(self, root: Path):
        key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        # The folder carries the entry format: another dermbench version never misreads these entries.
        self.path = cache_dir("hashes-v2") / f"{key}.json"
        try:
            self.data: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    def get(self, file: Path) -> str:
        st = file.stat()
        k = str(file)
        rec = self.data.get(k)
        # size + mtime alone miss a same-size file copied in with its old mtime (cp -p, rsync -a,
        # untar); ctime and the inode change on every write or replacement and cannot be set back.
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if rec and len(rec) == 5 and rec[:4] == stamp:
            return rec[4]
        digest = sha256_file(file)
        with _HASH_LOCK:
            self.data[k] = stamp + [digest]
            self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            try:
                atomic_write_text(self.path, json.dumps(self.data))
            except OSError:
                pass  # a read-only cache only costs speed


def image_manifest(root: str | Path, files: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each image file, keyed by its path relative to ``root/images``."""
    from concurrent.futures import ThreadPoolExecutor

    root = Path(root)
    images = root / "images"
    memo = _HashMemo(root)
    paths = sorted({Path(f) if Path(f).is_absolute() else images / f for f in files})
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        digests = list(pool.map(memo.get, paths))
    memo.save()
    return {p.relative_to(images).as_posix(): d for p, d in zip(paths, digests)}


def compute_fingerprint(csv_hashes: dict[str, str], manifest: dict[str, str]) -> str:
    payload = json.dumps({"csv": csv_hashes, "images": sorted(manifest.items())}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def split_csv_hashes(root: str | Path) -> dict[str, str]:
    root = Path(root)
    return {s: sha256_file(root / f"{s}_metadata.csv") for s in SPLITS if (root / f"{s}_metadata.csv").exists()}


def dataset_fingerprint(root: str | Path) -> str:
    """Fingerprint of a dataset folder: its split CSVs and every image they can refer to."""
    from .contract import load_dataset

    return load_dataset(root, check_images=False, quiet=True).fingerprint


def read_card(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / CARD_NAME
    if not path.exists():
        return None
    from .contract import DatasetError  # here: contract imports this module

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # DatasetError: the CLI shows the message, not a traceback
        raise DatasetError(f"{path} is not valid JSON ({exc}); re-create it with `dermbench validate "
                           f"{root} --write-card`") from exc


def write_card(root: str | Path, **info: Any) -> dict[str, Any]:
    """Write ``dataset.json`` for a dataset folder, computing counts, manifest and fingerprint.

    ``info`` carries what only the producer knows: ``source``, ``licence``, ``label_mapping``,
    ``split_policy``, ``premalignant_policy``, ``excluded`` (rows dropped while preparing), etc.
    Existing keys of an older card are kept unless ``info`` overrides them.
    """
    from .contract import load_dataset

    root = Path(root)
    ds = load_dataset(root, check_images=True, quiet=True, read_card=False)
    try:
        old = read_card(root) or {}
    except ValueError:  # a damaged card is what --write-card is for: start a fresh one
        old = {}
    card: dict[str, Any] = {k: v for k, v in old.items() if k not in ("counts", "manifest", "fingerprint")}
    card.setdefault("name", root.name)
    card.update(info)
    card["counts"] = ds.counts()
    card["n_images"] = int(sum(len(df) for df in ds.splits.values()))
    card["load_exclusions"] = [e.as_dict() for e in ds.exclusions]
    card["fingerprint"] = ds.fingerprint
    card["manifest"] = ds.manifest
    card["written_by"] = f"dermbench {__version__}"
    card["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(root / CARD_NAME, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return card
