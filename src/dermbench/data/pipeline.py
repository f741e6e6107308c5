"""The fast image pipeline: decode less, decode once, keep the model fed (PRODUCT §10).

Three layers, each usable alone:

1. :func:`load_image` — the one read path: reduced-size JPEG decoding (Pillow ``draft``, i.e.
   libjpeg DCT scaling by 1/2, 1/4 or 1/8, chosen so the decoded image is still at least the
   working size) before an antialiased bicubic resize, EXIF orientation and colour-mode
   normalisation (via :func:`dermbench.data.images.open_rgb`), then a :class:`ResizePolicy`.

   **Tolerance** of reduced decoding against a full decode + the same resize, on 0–255 pixel
   values, measured by ``benchmarks/image_pipeline.py`` on textured synthetic JPEGs (quality 90:
   colour blobs, a darker lesion, pixel noise σ = 8) at 224 px, crop and squash: mean absolute
   difference 1.1 (600×450, decoded at 1/2) and 0.34 (4000×3000, decoded at 1/8); 99th percentile
   4 and 1; max 21 and 5 (isolated pixels on sharp edges). On 20 real HAM10000 JPEGs (224 px
   originals decoded at 1/2 for 112 px): mean 0.62, p99 3, max 14. Smooth images differ ≈ 0.5;
   pure per-pixel noise of σ = 18 is the bad case (≈ 3). **Stated bound: mean |diff| ≤ 1.5 and
   99th percentile ≤ 6 on textured images**, asserted in ``tests/test_pipeline.py``. The resize
   is the same Pillow bicubic filter in both, so the difference is the DCT-domain downscale
   alone. PNGs are decoded in full (no DCT scaling exists for them).

2. :func:`build_image_cache` — a per-dataset **preprocessed image cache**: uint8 pixels at the
   working resolution in one ``.npy`` file memory-mapped by every reader. ``.npy`` (written
   with ``np.lib.format.open_memmap``) rather than a raw file + JSON header because its header is
   self-describing (dtype, shape, order), any numpy can ``np.load(..., mmap_mode="r")`` it, and
   there is no offset arithmetic of our own to get wrong. Next to it ``meta.json`` holds the row
   order (``img_id`` per row), the key material and the decode errors; it is written *last*, and
   the whole folder is built under a unique temporary name and renamed into place atomically,
   so a folder under the final name is always complete.

   Key: dataset name + content fingerprint (a changed image or CSV changes it) + the splits
   cached + the policy (size, mode) + the format version, resize filter, draft factor and Pillow
   version (anything that changes the pixels). Concurrency: a builder holds an exclusive
   ``fcntl.flock`` on ``<key>.lock`` while building, so a second process waits and then reuses
   the finished cache; if locking is unavailable (some network file systems) the atomic rename
   still guarantees one complete winner and the loser discards its copy. An interrupted build
   leaves only a ``.<key>.tmp-*`` folder, which the next builder (holding the lock) deletes.

   Parallel build: a thread pool by default. Pillow releases the GIL while decoding and
   resizing; on this 2-core machine a 2-thread pool built 96 600×450 images at ~520 images/s
   against ~260/s for a 2-process fork pool (process start-up and result pickling; the
   benchmark prints both), so threads it is; ``executor="process"`` remains available.

3. :func:`make_loader` — a ``torch.utils.data.DataLoader`` over one split, reading the cache
   (memory map re-opened lazily in each worker, never pickled) or decoding on the fly, applying a
   transform to a **uint8 CHW tensor** (what ``torchvision.transforms.v2`` takes natively) and
   yielding ``{"image", "label", "img_id", "index"}`` batches. Images that failed to decode are
   excluded and listed in ``loader.errors`` (also ``loader.dataset.errors``) and, as contract
   ``Exclusion`` rows, in ``loader.exclusions``; nothing is ever substituted.

Typical use in a paradigm::

    policy = ResizePolicy(224, "crop")
    cache = build_image_cache(ds, policy)                     # once; later calls are cache hits
    train = make_loader(ds, "train", policy=policy, transform=train_tf, shuffle=True,
                        workers=2, seed=run_seed, device=device, drop_last=True)
    val = make_loader(ds, "validation", policy=policy, transform=eval_transform(mean, std),
                      workers=2, device=device)
    exclusions = ds.exclusions + cache.exclusions(ds)         # report them with the run
    for batch in train: batch["image"], batch["label"], batch["img_id"], batch["index"]
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import numbers
import os
import random
import shutil
import sys
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .images import ImageReadError, open_rgb
from ..utils.atomic import atomic_write_text
from ..utils.paths import cache_dir, safe_name

#: Bump when the cache layout or the pixel computation changes; old caches are then ignored.
FORMAT_VERSION = 1
RESIZE_MODES = ("crop", "pad", "squash")
#: Antialiased bicubic: Pillow widens the kernel when downscaling, so this is a proper low-pass.
RESAMPLE = Image.Resampling.BICUBIC
#: Reduced decoding keeps at least ``DRAFT_FACTOR`` × the working size before the resize. 1 is
#: the fastest setting that stays within the stated tolerance (see the module docstring).
DRAFT_FACTOR = 1
#: Padding colour for ``mode="pad"`` (black, as torchvision's ``Pad`` default).
PAD_FILL = (0, 0, 0)

_PIXELS = "pixels.npy"
_META = "meta.json"

ErrorRecord = tuple[str, str, str, str]  # (split, img_id, reason, detail)


# --------------------------------------------------------------------------------------------
# Reading one image
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResizePolicy:
    """How an image becomes a ``size`` × ``size`` square.

    ``crop``: aspect-preserving resize of the short side to ``size``, then a centre crop (the
    default; no distortion, loses the edges of the long side). ``pad``: the long side fits
    ``size``, the rest is padded with black (keeps the whole lesion field). ``squash``: resize
    both sides to ``size`` regardless of aspect ratio — the distortion the study used, kept for
    reproducing it.
    """

    size: int = 224
    mode: str = "crop"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or self.size < 8:
            raise ValueError(f"ResizePolicy.size must be an integer >= 8, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))  # numpy ints from configs -> int
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"ResizePolicy.mode must be one of {', '.join(RESIZE_MODES)}; got {self.mode!r}")

    def key(self) -> str:
        """Short, file-name safe identity of the pixels this policy produces, e.g. ``crop224``."""
        return f"{self.mode}{self.size}"


def load_image(path: str | Path, policy: ResizePolicy = ResizePolicy()) -> np.ndarray:
    """Read one image as a uint8 ``size × size × 3`` array according to ``policy``.

    JPEGs are decoded at reduced size (DCT scaling) no smaller than the working size; see the
    module docstring for the measured tolerance. Raises :class:`~dermbench.data.images.ImageReadError`
    (reason ``missing_image``, ``truncated_image``, ``unreadable_image`` ...) for a file that
    cannot be used.
    """
    side = policy.size * DRAFT_FACTOR
    img = open_rgb(path, draft_size=(side, side))
    return apply_policy(img, policy)


def apply_policy(img: Image.Image, policy: ResizePolicy) -> np.ndarray:
    """Resize an RGB ``PIL.Image`` to the policy's square; returns a contiguous uint8 HxWx3 array."""
    s = policy.size
    w, h = img.size
    if policy.mode == "squash":
        out = img.resize((s, s), RESAMPLE)
    elif policy.mode == "crop":
        # Resize only the central square of the source: identical to resize-then-crop, cheaper.
        short = min(w, h)
        left, top = (w - short) / 2.0, (h - short) / 2.0
        out = img.resize((s, s), RESAMPLE, box=(left, top, left + short, top + short))
    else:  # pad
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        inner = img.resize((nw, nh), RESAMPLE)
        out = Image.new("RGB", (s, s), PAD_FILL)
        out.paste(inner, ((s - nw) // 2, (s - nh) // 2))
    arr = np.array(out, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    if arr.shape != (s, s, 3):  # defensive: the rest of the pipeline relies on this shape
        raise ValueError(f"resize produced {arr.shape}, expected {(s, s, 3)}")
    return arr


def load_image_full(path: str | Path, policy: ResizePolicy = ResizePolicy()) -> np.ndarray:
    """Reference path: full-resolution decode + the same resize (for tolerance checks)."""
    return apply_policy(open_rgb(path), policy)


# --------------------------------------------------------------------------------------------
# The preprocessed image cache
# --------------------------------------------------------------------------------------------

@dataclass
class ImageCache:
    """A built image cache: ``array[row]`` is the uint8 ``H×W×3`` image of ``img_ids[row]``.

    ``path`` is the cache folder (``pixels.npy`` + ``meta.json``); ``errors`` lists
    ``(split, img_id, reason, detail)`` for every image that failed to decode: such images are
    not in the cache, not in ``index`` and not in any loader — report them as exclusions.
    ``built_now`` says whether this call decoded the images (False on a cache hit).
    """

    path: Path
    key: str
    policy: ResizePolicy
    img_ids: list[str]
    splits: dict[str, list[str]]  # split -> img_ids cached for it, in dataset order
    errors: list[ErrorRecord] = field(default_factory=list)
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
            failed = [e for e in self.errors if e[1] == img_id]
            if failed:
                _split, _id, reason, detail = failed[0]
                raise KeyError(f"{img_id!r} is not in image cache {self.key}: it failed to decode "
                               f"({reason}{': ' + detail if detail else ''}); report it as an exclusion")
            raise KeyError(f"{img_id!r} is not in image cache {self.key} (cached splits: {', '.join(self.splits)})")
        return self.array[row]

    def errors_for(self, split: str) -> list[ErrorRecord]:
        return [e for e in self.errors if e[0] == split]

    def exclusions(self, dataset: Any, split: str | None = None) -> list[Any]:
        """The decode errors as contract :class:`~dermbench.data.contract.Exclusion` rows (CSV line
        numbers included), ready to add to ``dataset.exclusions`` in a run's ``exclusions.csv``."""
        return image_exclusions(dataset, self.errors if split is None else self.errors_for(split))

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the pixels: a worker re-opens the memory map itself.
        state = dict(self.__dict__)
        state["_array"] = None
        return state


def image_exclusions(dataset: Any, errors: Iterable[ErrorRecord]) -> list[Any]:
    """``(split, img_id, reason, detail)`` records -> contract ``Exclusion`` objects."""
    from .contract import Exclusion

    out = []
    for split, img_id, reason, detail in errors:
        line = 0
        frame = dataset.splits.get(split)
        if frame is not None:
            hits = np.flatnonzero(frame["img_id"].astype(str).to_numpy() == img_id)
            lines = frame.attrs.get("csv_lines")
            if len(hits) and lines is not None and hits[0] < len(lines):
                line = int(lines[hits[0]])
        out.append(Exclusion(split, line, img_id, reason, detail))
    return out


def cache_key(dataset: Any, policy: ResizePolicy, splits: Sequence[str]) -> str:
    """Folder name of the cache: readable prefix + hash of everything that changes the pixels."""
    import PIL

    if not getattr(dataset, "fingerprint", ""):
        raise ValueError("the dataset has no fingerprint; load it with dermbench.data.contract.load_dataset")
    material = {
        "fingerprint": dataset.fingerprint,
        "splits": list(splits),
        "policy": {"size": policy.size, "mode": policy.mode},
        "format": FORMAT_VERSION,
        "resample": RESAMPLE.name,
        "draft_factor": DRAFT_FACTOR,
        "pad_fill": list(PAD_FILL),
        "pillow": PIL.__version__,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]
    return f"{safe_name(dataset.name)}-{dataset.fingerprint[:12]}-{policy.key()}-v{FORMAT_VERSION}-{digest}"


def build_image_cache(
    dataset: Any,
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
    with _exclusive_lock(root / f"{key}.lock") as locked:
        cached = _open_cache(final, key, policy)  # another process may have finished meanwhile
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


def _open_cache(folder: Path, key: str, policy: ResizePolicy) -> ImageCache | None:
    """A complete cache in ``folder``, or None (missing, partial or from another format)."""
    try:
        meta = json.loads((folder / _META).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        img_ids = list(meta["img_ids"])
        arr = np.load(folder / _PIXELS, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    s = policy.size
    if arr.dtype != np.uint8 or arr.shape != (len(img_ids), s, s, 3):
        return None
    return ImageCache(path=folder, key=key, policy=policy, img_ids=img_ids,
                      splits={k: list(v) for k, v in meta["splits"].items()},
                      errors=[tuple(e) for e in meta.get("errors", [])], _array=arr)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[bool]:
    """``fcntl.flock`` on a lock file, yielding whether the lock is held. Where locking is
    unsupported (not POSIX, some network file systems) it yields False and the build relies on
    the atomic rename alone."""
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


def _check_free_space(root: Path, dataset: Any, policy: ResizePolicy, split_names: Sequence[str]) -> None:
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


def _build_into(tmp: Path, dataset: Any, policy: ResizePolicy, split_names: Sequence[str], key: str,
                *, workers: int, progress: bool, executor: str) -> None:
    rows: list[tuple[str, str, str]] = []  # (split, img_id, path)
    for s in split_names:
        df = dataset.splits[s]
        rows.extend((s, str(i), str(p)) for i, p in zip(df["img_id"], df["path"]))
    n, size = len(rows), policy.size
    pixels = tmp / _PIXELS
    arr = np.lib.format.open_memmap(pixels, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    failures: dict[int, tuple[str, str]] = {}
    bar = _progress(total=n, desc=f"image cache {policy.key()} {dataset.name}", enabled=progress)
    jobs = [(r, p) for r, (_s, _i, p) in enumerate(rows)]
    try:
        if workers <= 1 or n <= 1:
            for r, p in jobs:
                failed = _decode_into(arr, r, p, policy)
                if failed:
                    failures[r] = failed
                bar.update(1)
        elif executor == "thread":
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for r, failed in zip(range(n), pool.map(lambda j: _decode_into(arr, j[0], j[1], policy), jobs)):
                    if failed:
                        failures[r] = failed
                    bar.update(1)
        else:
            import multiprocessing as mp

            arr.flush()
            _BUILD_STATE.clear()
            _BUILD_STATE.update(pixels=str(pixels), policy=policy)
            ctx = mp.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for r, failed in pool.map(_process_decode, jobs, chunksize=max(1, min(64, n // (workers * 8) or 1))):
                    if failed:
                        failures[r] = failed
                    bar.update(1)
            _BUILD_STATE.clear()
    finally:
        bar.close()
    arr.flush()
    del arr
    errors = [(rows[r][0], rows[r][1], *failures[r]) for r in sorted(failures)]
    keep = [r for r in range(n) if r not in failures]
    if failures:  # compact: the cache holds only usable images, in dataset order
        src = np.load(pixels, mmap_mode="r")
        compact_path = tmp / f"compact-{_PIXELS}"
        dst = np.lib.format.open_memmap(compact_path, mode="w+", dtype=np.uint8, shape=(len(keep), size, size, 3))
        for j, r in enumerate(keep):
            dst[j] = src[r]
        dst.flush()
        del src, dst
        os.replace(compact_path, pixels)
    with open(pixels, "rb+") as fh:
        os.fsync(fh.fileno())
    split_ids: dict[str, list[str]] = {s: [] for s in split_names}
    for r in keep:
        split_ids[rows[r][0]].append(rows[r][1])
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "policy": {"size": policy.size, "mode": policy.mode},
        "shape": [len(keep), size, size, 3],
        "img_ids": [rows[r][1] for r in keep],
        "splits": split_ids,
        "errors": [list(e) for e in errors],
    }
    atomic_write_text(tmp / _META, json.dumps(meta))  # the completion marker: written last
    if errors:
        warnings.warn(f"image cache {key}: {len(errors)} image(s) failed to decode and are excluded "
                      f"(first: {errors[0][1]} {errors[0][2]})", stacklevel=3)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Torch datasets and the loader factory (torch is imported lazily)
# --------------------------------------------------------------------------------------------

def _to_chw_tensor(pixels: np.ndarray) -> Any:
    import torch

    if not (pixels.flags.writeable and pixels.flags.c_contiguous):
        pixels = np.array(pixels, dtype=np.uint8, order="C")  # memmap rows are read-only: copy once
    return torch.from_numpy(pixels).permute(2, 0, 1)


class _ToFloat:
    """Default transform: uint8 CHW -> float32 in [0, 1] (no normalisation)."""

    def __call__(self, image: Any) -> Any:
        import torch

        if isinstance(image, np.ndarray):
            image = _to_chw_tensor(image)
        return image.to(torch.float32).div_(255.0)


class _Normalize:
    """uint8 CHW tensor (or HxWx3 array) -> float32 CHW, ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean!r} and {std!r}")
        if any(float(v) <= 0 for v in std):
            raise ValueError(f"std must be positive, got {std!r}")
        if max(float(v) for v in mean) > 1.5:
            raise ValueError(f"mean {mean!r} looks like 0-255 values; give it on the 0-1 scale "
                             f"(as timm's data config does)")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._tensors: tuple[Any, Any] | None = None

    def __call__(self, image: Any) -> Any:
        import torch

        if isinstance(image, np.ndarray):
            image = _to_chw_tensor(image)
        if self._tensors is None:  # built lazily so the object stays cheap to pickle
            self._tensors = (torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1),
                             torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1))
        mean, std = self._tensors
        return image.to(torch.float32).div_(255.0).sub_(mean).div_(std)

    def __getstate__(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "_tensors": None}

    def __repr__(self) -> str:
        return f"eval_transform(mean={self.mean}, std={self.std})"


def eval_transform(mean: Sequence[float] = (0.485, 0.456, 0.406),
                   std: Sequence[float] = (0.229, 0.224, 0.225)) -> Callable[[Any], Any]:
    """The model's inference preprocessing on cached pixels: uint8 CHW tensor (or HxWx3 array) ->
    float32 CHW normalised with the model's ``mean``/``std`` on the 0–1 scale (timm's
    ``resolve_data_config(model=m)["mean"]``). The resolution is the cache's :class:`ResizePolicy`."""
    return _Normalize(mean, std)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for deterministic workers: seeds numpy and ``random`` from torch's
    per-worker seed (itself derived from the loader's seeded ``torch.Generator``)."""
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class CachedSplitImages:
    """Map-style dataset over one split, reading the image cache. The memory map is opened
    lazily in each process (the pickled state holds only the cache's path and row numbers)."""

    def __init__(self, cache: ImageCache, split: str, frame: Any, transform: Callable | None):
        failed = {e[1] for e in cache.errors_for(split)}
        ids = [str(i) for i in frame["img_id"]]
        positions = [k for k, i in enumerate(ids) if i not in failed]
        missing = [ids[k] for k in positions if ids[k] not in cache.index]
        if missing:
            raise KeyError(f"{len(missing)} image(s) of split {split!r} are not in cache {cache.key} "
                           f"(e.g. {missing[0]}); was the cache built from another dataset?")
        self.cache = cache
        self.split = split
        self.img_ids = [ids[k] for k in positions]
        self.positions = np.asarray(positions, dtype=np.int64)  # row in dataset.splits[split]
        self.rows = np.asarray([cache.index[ids[k]] for k in positions], dtype=np.int64)
        self.labels = frame["label"].to_numpy(dtype=np.int64)[positions] if len(positions) else np.zeros(0, np.int64)
        self.transform = transform or _ToFloat()
        self.errors = cache.errors_for(split)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = _to_chw_tensor(self.cache.array[self.rows[i]])
        return {"image": self.transform(image), "label": int(self.labels[i]),
                "img_id": self.img_ids[i], "index": int(self.positions[i])}


class DecodedSplitImages:
    """Map-style dataset over one split that decodes every read with :func:`load_image`
    (``use_cache=False``). An unreadable image raises :class:`ImageReadError`: never substituted."""

    def __init__(self, split: str, frame: Any, policy: ResizePolicy, transform: Callable | None):
        self.split = split
        self.policy = policy
        self.img_ids = [str(i) for i in frame["img_id"]]
        self.paths = [str(p) for p in frame["path"]]
        self.positions = np.arange(len(self.img_ids), dtype=np.int64)
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.transform = transform or _ToFloat()
        self.errors: list[ErrorRecord] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = _to_chw_tensor(load_image(self.paths[i], self.policy))
        return {"image": self.transform(image), "label": int(self.labels[i]),
                "img_id": self.img_ids[i], "index": int(i)}


def make_loader(
    dataset: Any,
    split: str,
    *,
    policy: ResizePolicy = ResizePolicy(),
    transform: Callable | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    sampler: Any = None,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    use_cache: bool = True,
    device: Any = None,
    progress: bool = True,
) -> Any:
    """A ``DataLoader`` over ``dataset.splits[split]`` yielding dict batches:

    ``image`` float ``[B, 3, H, W]`` (``transform`` applied to each **uint8 CHW tensor**; default:
    scaled to [0, 1]), ``label`` long ``[B]``, ``img_id`` list of str, ``index`` long ``[B]`` (row in
    ``dataset.splits[split]``).

    With ``use_cache`` (default) the split's images come from :func:`build_image_cache` (built on
    first use, for all splits at once). Images that failed to decode are left out and listed in
    ``loader.errors`` as ``(split, img_id, reason, detail)`` and in ``loader.exclusions`` as
    contract ``Exclusion`` rows — report them with the dataset's own exclusions.
    ``loader.dataset.labels`` / ``.img_ids`` give the loader's rows in order (a ``sampler``
    indexes these positions). With ``workers > 0`` shuffling and augmentation are reproducible
    for a given ``seed`` (seeded ``torch.Generator`` + :func:`seed_worker`); with ``workers=0``
    augmentation draws from the process's global RNGs, which the caller seeds (as the paradigms
    do with their run seed). ``pin_memory`` is on only for a CUDA ``device``; ``persistent_workers``
    whenever there are workers, which start with ``fork`` on Linux.
    """
    import torch
    from torch.utils.data import DataLoader

    frame = dataset.split(split) if hasattr(dataset, "split") else dataset.splits[split]
    if use_cache:
        cache = build_image_cache(dataset, policy, progress=progress)
        ds: Any = CachedSplitImages(cache, split, frame, transform)
        if ds.errors:
            warnings.warn(f"{len(ds.errors)} image(s) of split {split!r} failed to decode and are excluded "
                          f"(see loader.errors)", stacklevel=2)
    else:
        ds = DecodedSplitImages(split, frame, policy, transform)
    if sampler is not None and shuffle:
        raise ValueError("give either shuffle=True or a sampler, not both")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    is_cuda = device is not None and torch.device(device).type == "cuda"
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs["persistent_workers"] = True
        kwargs["prefetch_factor"] = 4
        if sys.platform.startswith("linux"):
            # fork: workers start fast and share the already-open state; the memory map itself is
            # re-opened lazily in each worker (CachedSplitImages pickles without pixels).
            import multiprocessing as mp

            kwargs["multiprocessing_context"] = mp.get_context("fork")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                        sampler=sampler, num_workers=workers, worker_init_fn=seed_worker,
                        generator=generator, drop_last=drop_last, pin_memory=is_cuda, **kwargs)
    loader.errors = list(ds.errors)  # type: ignore[attr-defined]
    loader.exclusions = image_exclusions(dataset, ds.errors)  # type: ignore[attr-defined]
    return loader


__all__ = [
    "ResizePolicy", "load_image", "load_image_full", "apply_policy", "ImageCache", "build_image_cache",
    "cache_key", "image_exclusions", "make_loader", "eval_transform", "seed_worker", "CachedSplitImages", "DecodedSplitImages",
    "FORMAT_VERSION", "RESIZE_MODES",
]
