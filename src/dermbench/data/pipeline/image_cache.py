"""The per-dataset preprocessed image cache: decode once, read by memory map ever after.

uint8 pixels at the working resolution live in one ``.npy`` file memory-mapped by every reader.
``.npy`` (written with ``np.lib.format.open_memmap``) rather than a raw file + JSON header because
its header is self-describing (dtype, shape, order), any numpy can ``np.load(..., mmap_mode="r")``
it, and there is no offset arithmetic of our own to get wrong. Next to it ``meta.json`` holds the
row order (``img_id`` per row), the key material and the decode failures; it is written *last*,
and the whole folder is built under a unique temporary name and renamed into place atomically,
so a folder under the final name is always complete.

Key: dataset name + content fingerprint (a changed image or CSV changes it) + the splits cached +
the policy (size, mode) + the format version, resize filter, draft factor and Pillow version
(anything that changes the pixels). Concurrency: a builder holds an exclusive lock on
``<key>.lock`` while building, so a second process waits and then reuses the finished cache; if
locking is unavailable (some network file systems) the atomic rename still guarantees one
complete winner and the loser discards its copy. An interrupted build leaves only a
``.<key>.tmp-*`` folder, which the next builder (holding the lock) deletes.

Parallel build: a thread pool by default. Pillow releases the GIL while decoding and resizing; on
a 2-core machine a 2-thread pool built 96 600×450 images at ~520 images/s against ~260/s for a
2-process fork pool (process start-up and result pickling; ``benchmarks/image_pipeline.py``
prints both), so threads it is; ``executor="process"`` remains available.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ...errors import ImageReadError
from ...utils.atomic import atomic_write_text
from ...utils.console import get_logger, progress as progress_bar
from ...utils.locks import exclusive_lock
from ...utils.paths import cache_dir, safe_name
from ..dataset import LesionDataset
from ..exclusions import Exclusion, stored_exclusion
from .decode import DRAFT_FACTOR, PAD_FILL, RESAMPLE, ResizePolicy, load_image

#: Bump when the cache layout or the pixel computation changes; old caches are then ignored.
FORMAT_VERSION = 1

_PIXELS = "pixels.npy"
_META = "meta.json"
_log = get_logger("data")


@dataclass
class ImageCache:
    """A built image cache: ``array[row]`` is the uint8 ``H×W×3`` image of ``img_ids[row]``.

    ``path`` is the cache folder (``pixels.npy`` + ``meta.json``); ``errors`` lists an
    :class:`~dermbench.data.exclusions.Exclusion` for every image that failed to decode: such
    images are not in the cache, not in ``index`` and not in any loader — report them with the
    run. ``built_now`` says whether this call decoded the images (False on a cache hit).
    """

    path: Path
    key: str
    policy: ResizePolicy
    img_ids: list[str]
    splits: dict[str, list[str]]  # split -> img_ids cached for it, in dataset order
    errors: list[Exclusion] = field(default_factory=list)
    built_now: bool = False
    _array: np.ndarray | None = field(default=None, repr=False, compare=False)
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    @property
    def pixels_path(self) -> Path:
        return self.path / _PIXELS

    @property
    def array(self) -> np.ndarray:
        """Read-only ``np.memmap`` uint8 ``[N, H, W, 3]``, opened on first use in each process."""
        if self._array is None:
            self._array = np.load(self.pixels_path, mmap_mode="r")
        return self._array

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {img_id: row for row, img_id in enumerate(self.img_ids)}
        return self._index

    def __len__(self) -> int:
        return len(self.img_ids)

    def __contains__(self, img_id: object) -> bool:
        return img_id in self.index

    def get(self, img_id: str) -> np.ndarray:
        """The cached uint8 HxWx3 pixels of ``img_id`` (a read-only view of the memory map)."""
        row = self.index.get(img_id)
        if row is None:
            failed = [e for e in self.errors if e.img_id == img_id]
            if failed:
                raise KeyError(f"{img_id!r} is not in image cache {self.key}: it failed to decode "
                               f"({failed[0].reason}{': ' + failed[0].detail if failed[0].detail else ''}); "
                               f"report it as an exclusion")
            raise KeyError(f"{img_id!r} is not in image cache {self.key} (cached splits: {', '.join(self.splits)})")
        return self.array[row]

    def errors_for(self, split: str) -> list[Exclusion]:
        return [e for e in self.errors if e.split == split]

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the pixels: a worker re-opens the memory map itself.
        state = dict(self.__dict__)
        state["_array"] = None
        return state


def cache_key(dataset: LesionDataset, policy: ResizePolicy, splits: Sequence[str]) -> str:
    """Folder name of the cache: readable prefix + hash of everything that changes the pixels."""
    import PIL

    if not getattr(dataset, "fingerprint", ""):
        raise ValueError("the dataset has no fingerprint; load it with dermbench.data.contract.load_dataset")
    material = {
        "fingerprint": dataset.fingerprint,
        "splits": list(splits),
        "policy": {"size": policy.size, "mode": policy.mode,
                   **({"crop_from": policy.crop_from} if policy.crop_from else {}),
                   **({"interpolation": policy.interpolation} if policy.interpolation != "bicubic" else {})},
        "format": FORMAT_VERSION,
        "resample": RESAMPLE.name,
        "draft_factor": DRAFT_FACTOR,
        "pad_fill": list(PAD_FILL),
        "pillow": PIL.__version__,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]
    return f"{safe_name(dataset.name)}-{dataset.fingerprint[:12]}-{policy.key()}-v{FORMAT_VERSION}-{digest}"


def build_image_cache(
    dataset: LesionDataset,
    policy: ResizePolicy = ResizePolicy(),
    *,
    splits: Iterable[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    executor: str = "thread",
) -> ImageCache:
    """Return the image cache of ``dataset`` at ``policy``, building it once if needed.

    ``splits`` defaults to every split of the dataset (one cache shared by all paradigms).
    ``workers`` defaults to the CPU count; ``executor`` is ``"thread"`` (default, see the module
    docstring) or ``"process"`` (fork-based pool writing into the same memory map).
    """
    split_names = tuple(dataset.splits) if splits is None else tuple(splits)
    for s in split_names:
        if s not in dataset.splits:
            raise KeyError(f"dataset {dataset.name!r} has no split {s!r}; it has {', '.join(dataset.splits)}")
    if executor not in ("thread", "process"):
        raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")
    key = cache_key(dataset, policy, split_names)
    root = cache_dir("images")
    final = root / key
    cached = _open_cache(final, key, policy)
    if cached is not None:
        return cached
    with exclusive_lock(root / f"{key}.lock") as locked:
        cached = _open_cache(final, key, policy, warn=False)  # another process may have finished meanwhile
        if cached is not None:
            return cached
        _remove_stale(root, key, final, locked)
        _check_free_space(root, dataset, policy, split_names)
        tmp = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            _build_into(tmp, dataset, policy, split_names, key,
                        workers=workers or os.cpu_count() or 1, progress=progress, executor=executor)
            try:
                os.rename(tmp, final)
                built = json.loads((final / _META).read_text()).get("pixels_sha256")
                _pixels_sha256(final / _PIXELS, known=built)  # not hashed a second time on the open below
            except OSError as exc:
                # Lost a race with a builder that could not be locked out: keep the winner's copy.
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or _open_cache(final, key, policy) is None:
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    cached = _open_cache(final, key, policy)
    if cached is None:
        raise RuntimeError(f"image cache {final} was built but cannot be opened; delete it and retry")
    cached.built_now = True
    return cached


def _open_cache(folder: Path, key: str, policy: ResizePolicy, *, warn: bool = True) -> ImageCache | None:
    """A complete cache in ``folder``, or None (missing, partial, from another format, or changed
    since it was built: a warning says so when ``warn``)."""
    try:
        meta = json.loads((folder / _META).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        img_ids = list(meta["img_ids"])
        errors = [stored_exclusion(e) for e in meta.get("errors", [])]
        arr = np.load(folder / _PIXELS, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    s = policy.size
    if arr.dtype != np.uint8 or arr.shape != (len(img_ids), s, s, 3):
        return None
    recorded = meta.get("pixels_sha256")
    if recorded and _pixels_sha256(folder / _PIXELS) != recorded:
        if warn:
            _log.warning(f"image cache {folder / _PIXELS} does not match the checksum recorded when it was built "
                         f"(it changed since); decoding its images again")
        return None
    return ImageCache(path=folder, key=key, policy=policy, img_ids=img_ids,
                      splits={k: list(v) for k, v in meta["splits"].items()}, errors=errors, _array=arr)


def _pixels_sha256(pixels: Path, known: str | None = None) -> str:
    """sha256 of a cache's ``pixels.npy``, memoised by file stamp: hashed once, then a stat per open
    (a file rewritten in place, even with its old size, has a new stamp and is hashed again).
    ``known``: the hash just computed by the builder, remembered for the file's stamp now."""
    from ...utils.filestamp import FileStampMemo, sha256_file

    with FileStampMemo("image-cache-sha256", str(pixels.parent.parent)) as memo:
        return memo.get(pixels, (lambda _path: known) if known else sha256_file)


def _check_free_space(root: Path, dataset: LesionDataset, policy: ResizePolicy, split_names: Sequence[str]) -> None:
    n = sum(len(dataset.splits[s]) for s in split_names)
    need = n * policy.size * policy.size * 3
    free = shutil.disk_usage(root).free
    if need > free:
        raise OSError(errno.ENOSPC, f"the image cache for {n} images at {policy.key()} needs "
                                    f"{need / 2**30:.2f} GiB but {root} has {free / 2**30:.2f} GiB free; free space "
                                    f"or point DERMBENCH_CACHE at a larger disk")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove_stale(root: Path, key: str, final: Path, locked: bool) -> None:
    """Delete leftovers of interrupted builds of this key. Holding the lock, none can be live;
    without it, only folders whose builder process is gone are removed."""
    for leftover in root.glob(f".{key}.tmp-*"):
        try:
            pid = int(leftover.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            pid = -1
        if locked or pid <= 0 or not _pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)
    if final.exists() and locked:  # present but not openable: damaged by hand or by an older format
        shutil.rmtree(final, ignore_errors=True)


# Per-process state of the process-pool builder (set before fork, read in the children).
_BUILD_STATE: dict[str, Any] = {}


def _decode_into(arr: np.ndarray, row: int, path: str, policy: ResizePolicy) -> tuple[str, str] | None:
    try:
        arr[row] = load_image(path, policy)
    except ImageReadError as err:
        return err.reason, err.detail
    return None


def _process_decode(job: tuple[int, str]) -> tuple[int, tuple[str, str] | None]:
    arr = _BUILD_STATE.get("array")
    if arr is None:
        arr = _BUILD_STATE["array"] = np.load(_BUILD_STATE["pixels"], mmap_mode="r+")
    row, path = job
    return row, _decode_into(arr, row, path, _BUILD_STATE["policy"])


def _decode_all(arr: np.ndarray, pixels: Path, paths: list[str], policy: ResizePolicy, *, workers: int,
                executor: str, bar: Any) -> dict[int, tuple[str, str]]:
    """Decode ``paths[row]`` into ``arr[row]`` (the memory map of ``pixels``); returns
    ``{row: (reason, detail)}`` of the images that failed."""
    n = len(paths)
    jobs = list(enumerate(paths))
    failures: dict[int, tuple[str, str]] = {}
    with contextlib.ExitStack() as stack:
        if workers <= 1 or n <= 1:
            results: Iterable[tuple[int, tuple[str, str] | None]] = (
                (r, _decode_into(arr, r, p, policy)) for r, p in jobs)
        elif executor == "thread":
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
            results = zip(range(n), pool.map(lambda j: _decode_into(arr, j[0], j[1], policy), jobs))
        else:
            import multiprocessing as mp

            arr.flush()
            _BUILD_STATE.clear()
            _BUILD_STATE.update(pixels=str(pixels), policy=policy)
            stack.callback(_BUILD_STATE.clear)
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")))
            results = pool.map(_process_decode, jobs, chunksize=max(1, min(64, n // (workers * 8) or 1)))
        for row, failed in results:
            if failed:
                failures[row] = failed
            bar.update(1)
    return failures


def _compact(pixels: Path, keep: list[int], shape: tuple[int, int, int]) -> None:
    """Rewrite ``pixels`` with only the rows in ``keep`` (the cache holds usable images only)."""
    src = np.load(pixels, mmap_mode="r")
    compact_path = pixels.with_name(f"compact-{pixels.name}")
    dst = np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8, shape=(len(keep), *shape))
    for j, r in enumerate(keep):
        dst[j] = src[r]
    dst.flush()
    del src, dst
    os.replace(compact_path, pixels)


def _build_into(tmp: Path, dataset: LesionDataset, policy: ResizePolicy, split_names: Sequence[str], key: str,
                *, workers: int, progress: bool, executor: str) -> None:
    rows: list[tuple[str, str, str]] = []  # (split, img_id, path)
    for s in split_names:
        df = dataset.splits[s]
        rows.extend((s, str(i), str(p)) for i, p in zip(df["img_id"], df["path"]))
    n, size = len(rows), policy.size
    pixels = tmp / _PIXELS
    arr = np.lib.format.open_memmap(pixels, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    with progress_bar(total=n, desc=f"image cache {policy.key()} {dataset.name}", enabled=progress) as bar:
        failures = _decode_all(arr, pixels, [p for _s, _i, p in rows], policy, workers=workers, executor=executor,
                               bar=bar)
    arr.flush()
    del arr
    keep = [r for r in range(n) if r not in failures]
    if failures:
        _compact(pixels, keep, (size, size, 3))
    with open(pixels, "rb+") as fh:
        os.fsync(fh.fileno())
    from ...utils.filestamp import sha256_file

    pixels_sha256 = sha256_file(pixels)
    errors = [Exclusion(split=rows[r][0], img_id=rows[r][1], reason=failures[r][0], detail=failures[r][1],
                        row=dataset.csv_line(rows[r][0], rows[r][1])) for r in sorted(failures)]
    split_ids: dict[str, list[str]] = {s: [] for s in split_names}
    for r in keep:
        split_ids[rows[r][0]].append(rows[r][1])
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "policy": {"size": policy.size, "mode": policy.mode,
                   **({"crop_from": policy.crop_from} if policy.crop_from else {}),
                   **({"interpolation": policy.interpolation} if policy.interpolation != "bicubic" else {})},
        "shape": [len(keep), size, size, 3],
        "img_ids": [rows[r][1] for r in keep],
        "splits": split_ids,
        "errors": [e.as_dict() for e in errors],
        "pixels_sha256": pixels_sha256,  # checked on open: a cache changed in place is built again
    }
    atomic_write_text(tmp / _META, json.dumps(meta))  # the completion marker: written last
    if errors:
        _log.warning(f"image cache {key}: {len(errors)} image(s) failed to decode and are excluded "
                     f"(first: {errors[0].img_id} {errors[0].reason})")
