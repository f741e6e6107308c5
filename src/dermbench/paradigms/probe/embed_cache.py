"""The embedding cache: every image of a split embedded once per backbone and preprocessing.

**Key.** A cache entry is one (backbone, weights identity, preprocessing, dataset content
fingerprint, split, augmentation view) — the whole :attr:`Embedder.identity` (which includes the
working size, resize mode, mean/std and pooling) plus the dataset fingerprint, the split, the view
index and augmentation preset, and the cache format version, hashed into the folder name. Anything
that changes the vectors changes the key; heads, seeds, label fractions and balancing do not, so
every head and every run reuses the same vectors.

**Format: one ``.npy`` file per shard + ``meta.json``.** ``.npy`` rather than safetensors or HDF5:
float32 matrices are all we store, ``np.load(mmap_mode="r")`` reads them without a copy, it needs
nothing beyond numpy, and — the deciding reason — one small file per shard can be written
atomically (temp file + rename), which makes the extraction **resumable**: after a kill, the shards
already on disk are kept and only the missing ones are embedded. HDF5 cannot be appended to
atomically (a kill mid-write can corrupt the whole file), and safetensors has no benefit over
``.npy`` for anonymous float32 arrays. ``plan.json`` (written first) fixes the row order and shard
size; ``meta.json`` is written last and marks the entry complete. It records each shard's sha256,
checked whenever the entry is read: a shard changed since (same size or not) is embedded again
with a warning naming it, and NaN/inf read from a shard is a ``CacheError`` naming it.

**Augmented views.** View 0 is the plain evaluation preprocessing. Views 1..k apply the study's
augmentation preset (``paper``: random resized crop 0.8–1.0, flips, rotation 15°, colour jitter)
to the cached pixels before normalisation, seeded by (view, image) so a view is reproducible —
whatever the batch size, shard size or DataLoader workers — and shared by every run that asks for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...data.dataset import LesionDataset
from ...data.exclusions import Exclusion, stored_exclusion
from ...errors import CacheError
from ...utils.atomic import atomic_path, atomic_write_text
from ...utils.console import progress as progress_bar
from ...utils.filestamp import sha256_file
from ...utils.locks import exclusive_lock
from ...utils.paths import cache_dir, safe_name

FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 512
AUGMENTATION_PRESETS = ("paper",)


@dataclass
class EmbeddingSet:
    """The embeddings of one split: ``vectors[i]`` belongs to ``img_ids[i]``.

    ``errors`` lists the images that could not be read as :class:`~dermbench.data.exclusions.Exclusion`
    records (they have no vector; report them with the run). ``hit`` is True when nothing had to be embedded.
    """

    split: str
    view: int
    key: str
    path: Path
    img_ids: list[str]
    vectors: np.ndarray
    errors: list[Exclusion] = field(default_factory=list)
    hit: bool = False
    seconds: float = 0.0
    images_embedded: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images_embedded / self.seconds if self.seconds > 0 and self.images_embedded else 0.0


def embedding_key(embedder: Any, dataset: LesionDataset, split: str, view: int = 0, augmentation: str = "paper") -> str:
    """Folder name of a cache entry: readable prefix + hash of everything that changes the vectors."""
    if not getattr(dataset, "fingerprint", ""):
        raise ValueError("the dataset has no fingerprint; load it with dermbench.data.contract.load_dataset")
    from ...data.pipeline.image_cache import FORMAT_VERSION as PIXEL_FORMAT
    from ...data.pipeline.image_cache import cache_key as pixel_cache_key

    material = {
        "embedder": embedder.identity,
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "view": int(view),
        "augmentation": augmentation if view > 0 else None,
        # augmented views draw from torch's RNG seeded per (view, image): the same vectors whatever
        # the batch size, shard size or number of DataLoader workers
        "view_seeding": "per-image" if view > 0 else None,
        # the pixels themselves: resize filter, draft decoding, Pillow version (via the image cache key)
        "pixels": pixel_cache_key(dataset, embedder.policy, tuple(dataset.splits)).rsplit("-", 1)[-1],
        "pixel_format": PIXEL_FORMAT,
        "format": FORMAT_VERSION,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{safe_name(dataset.name)}-{split}-view{int(view)}-{embedder.policy.key()}-{digest}"


def entry_dir(embedder: Any, key: str) -> Path:
    return cache_dir("embeddings") / safe_name(embedder.name) / key


def augmentation_transform(preset: str, base: Any) -> Any:
    """The study's augmentation preset on uint8 CHW tensors, followed by ``base``."""
    if preset not in AUGMENTATION_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; available: {', '.join(AUGMENTATION_PRESETS)}")
    from torchvision.transforms import v2

    def make(size: int) -> Any:
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(15),
            v2.ColorJitter(brightness=(0.8, 1.2)),
        ])

    cache: dict[int, Any] = {}

    def transform(image: Any) -> Any:
        size = int(image.shape[-1])
        if size not in cache:
            cache[size] = make(size)
        return base(cache[size](image))

    return transform


def _seed_for_image(view: int, position: int) -> int:
    return int(hashlib.sha256(f"view{view}-image{position}".encode()).hexdigest()[:8], 16)


class _SeededView:
    """Map-style dataset: seeds torch's global RNG per (view, image position) before the item's
    random transform runs, in whichever process reads it. torchvision's random transforms draw
    from that RNG, so an augmented view does not depend on how images are batched, sharded or
    spread over DataLoader workers (each worker has its own RNG stream otherwise)."""

    def __init__(self, images: Any, view: int):
        self.images, self.view = images, int(view)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        import torch

        torch.manual_seed(_seed_for_image(self.view, int(i)))
        return self.images[i]


def embed_split(embedder: Any, dataset: LesionDataset, split: str, *, view: int = 0, augmentation: str = "paper",
                batch_size: int = 64, workers: int = 0, progress: bool = True,
                shard_size: int = DEFAULT_SHARD_SIZE) -> EmbeddingSet:
    """Embeddings of ``dataset``'s ``split`` with ``embedder``, from the cache or computed now.

    Computed shard by shard (each shard written atomically); a killed extraction resumes from
    the shards already on disk.
    """
    key = embedding_key(embedder, dataset, split, view, augmentation)
    folder = entry_dir(embedder, key)
    done = _read_complete(folder, split, view, key)
    if done is not None:
        return done
    # Cells of the same backbone running in parallel (several heads in a grid) wait for one
    # extraction instead of repeating it.
    with exclusive_lock(folder.parent / f"{key}.lock"):
        done = _read_complete(folder, split, view, key, repair=True)
        if done is not None:
            return done
        return _extract(embedder, dataset, split, key, folder, view=view, augmentation=augmentation,
                        batch_size=batch_size, workers=workers, progress=progress, shard_size=shard_size)


def _extract(embedder: Any, dataset: LesionDataset, split: str, key: str, folder: Path, *, view: int,
             augmentation: str, batch_size: int, workers: int, progress: bool, shard_size: int) -> EmbeddingSet:
    from ...data.pipeline.loaders import make_loader

    t0 = time.perf_counter()
    base = embedder.loader_transform
    transform = base if view == 0 else augmentation_transform(augmentation, base)
    loader = make_loader(dataset, split, policy=embedder.policy, transform=transform, batch_size=batch_size,
                         workers=0, use_cache=True, progress=progress)
    images = loader.dataset if view == 0 else _SeededView(loader.dataset, view)
    img_ids = list(loader.dataset.img_ids)
    size = _shard_plan(folder, key, img_ids, shard_size, embedder.identity)
    n = len(img_ids)
    n_shards = (n + size - 1) // size
    pending = [s for s in range(n_shards) if not _shard_ok(folder, s, size, n, embedder.embed_dim)]
    done_before = n - sum(min(size, n - s * size) for s in pending)
    embedded = 0
    t_embed = time.perf_counter()
    desc = f"embed {embedder.name} {split}" + (f" view{view}" if view else "")
    with progress_bar(n, desc, enabled=progress, initial=done_before) as bar:
        for shard, vectors in _embed_pending(embedder, images, img_ids, pending, size, batch_size=batch_size,
                                             workers=workers, bar=bar):
            start, stop = shard * size, min((shard + 1) * size, n)
            check_finite(vectors, embedder.name, split, shard, img_ids[start:stop])
            with atomic_path(folder / f"shard-{shard:05d}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, vectors)
            embedded += stop - start
    embed_seconds = time.perf_counter() - t_embed if pending else 0.0
    meta = {"key": key, "split": split, "view": int(view), "augmentation": augmentation if view else None,
            "n": n, "embed_dim": int(embedder.embed_dim), "shards": n_shards, "shard_size": size,
            "errors": [e.as_dict() for e in loader.errors], "identity": embedder.identity,
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
            "seconds": round(time.perf_counter() - t0, 3), "embed_seconds": round(embed_seconds, 3),
            "images_embedded_this_run": embedded}
    meta["shard_sha256"] = [sha256_file(folder / f"shard-{s:05d}.npy") for s in range(n_shards)]
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1, default=str))
    result = _read_complete(folder, split, view, key)
    if result is None:
        raise RuntimeError(f"embedding cache entry {folder} was written but cannot be read back")
    result.hit = embedded == 0
    result.seconds = time.perf_counter() - t0
    result.images_embedded = embedded
    return result


def _shard_plan(folder: Path, key: str, img_ids: list[str], shard_size: int, identity: Any) -> int:
    """Write ``plan.json`` (row order and shard size) and return the shard size. A plan left by an
    interrupted extraction of the same rows is kept, so its finished shards are reused; any other
    plan's shards are deleted."""
    plan_path = folder / "plan.json"
    plan = {"key": key, "img_ids": img_ids, "shard_size": int(shard_size), "identity": identity}
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        if old.get("img_ids") == img_ids and old.get("key") == key:
            plan = old  # resume with the original shard layout
        else:
            for stale in folder.glob("shard-*.npy"):
                stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_path, json.dumps(plan))
    return int(plan["shard_size"])


def _embed_pending(embedder: Any, images: Any, img_ids: list[str], pending: list[int], size: int, *,
                   batch_size: int, workers: int, bar: Any) -> Iterator[tuple[int, np.ndarray]]:
    """``(shard, vectors)`` for each shard of ``pending``, in order, from ONE loader over all of them
    (its workers start once, not once per shard). Batches never straddle a shard, so each shard is
    complete, checked and written before the next is embedded; a kill loses one shard at most."""
    import torch
    from torch.utils.data import DataLoader

    n = len(img_ids)
    batches: list[list[int]] = []
    for shard in pending:
        stop = min((shard + 1) * size, n)
        batches += [list(range(b, min(b + batch_size, stop))) for b in range(shard * size, stop, batch_size)]
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(num_workers=workers, prefetch_factor=4)
    loader = DataLoader(images, batch_sampler=batches, pin_memory=str(embedder.device).startswith("cuda"), **kwargs)
    shard_of = {shard: k for k, shard in enumerate(pending)}
    parts: list[np.ndarray] = []
    ids_seen: list[str] = []
    current = pending[0] if pending else None
    # Augmented views seed torch's global RNG per image (_SeededView); fork_rng keeps the
    # caller's RNG state untouched.
    with torch.random.fork_rng(devices=[]):
        for batch in loader:
            parts.append(embedder(batch["image"]))
            ids_seen += list(batch["img_id"])
            bar.update(len(batch["img_id"]))
            start, stop = current * size, min((current + 1) * size, n)
            if len(ids_seen) == stop - start:
                if ids_seen != img_ids[start:stop]:
                    raise CacheError(f"embedding shard {current} of {embedder.name}: the loader yielded other images "
                                     f"than the plan lists; delete the cache entry and retry")
                yield current, np.concatenate(parts).astype(np.float32)
                parts, ids_seen = [], []
                k = shard_of[current] + 1
                current = pending[k] if k < len(pending) else None
    if current is not None:
        raise CacheError(f"embedding shard {current} of {embedder.name}: the loader ended before the shard was "
                         f"complete; delete the cache entry and retry")


def check_finite(vectors: np.ndarray, backbone: str, split: str, shard: int, img_ids: list[str]) -> None:
    """Refuse to write a shard holding NaN or infinite values (a backbone that overflowed in half
    precision, a broken checkpoint): a FloatingPointError naming the images, and nothing cached."""
    finite = np.isfinite(vectors).all(axis=1) if vectors.ndim == 2 else np.isfinite(vectors)
    if not finite.all():
        bad = [img_ids[i] for i in np.flatnonzero(~finite)]
        raise FloatingPointError(
            f"backbone {backbone!r} returned non-finite embeddings for {len(bad)} of {len(img_ids)} {split} image(s) "
            f"of shard {shard} (e.g. {', '.join(bad[:3])}); nothing was cached. On a GPU this is usually float16 "
            f"overflow: run on a GPU with bfloat16 (compute capability 8.0+) or with --device cpu.")


def _shard_ok(folder: Path, shard: int, size: int, n: int, dim: int) -> bool:
    path = folder / f"shard-{shard:05d}.npy"
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.shape == (min(size, n - shard * size), dim)


def _read_complete(folder: Path, split: str, view: int, key: str, *, repair: bool = False) -> EmbeddingSet | None:
    """The complete entry in ``folder``, or None when it must be (re)computed.

    Each shard is checked against the sha256 that ``meta.json`` recorded for it when the entry was
    completed (one hash per shard file, computed on the bytes read anyway). A shard whose bytes
    changed since is a cache miss: with ``repair`` (the caller holds the entry's lock) it is
    deleted with a warning naming it, so the extraction embeds just that shard again. An entry
    written before shards carried checksums is a miss too; the extraction keeps its shards and
    records their checksums. Values that are not finite in a shard that matches its checksum were
    written so: a :class:`~dermbench.errors.CacheError` naming the shard (never scores computed on
    NaN)."""
    import io

    from ...errors import CacheError

    meta_path = folder / "meta.json"
    plan_path = folder / "plan.json"
    if not meta_path.is_file() or not plan_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        plan = json.loads(plan_path.read_text())
        n_shards, dim = int(meta["shards"]), int(meta["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    digests = meta.get("shard_sha256")
    if not isinstance(digests, list) or len(digests) != n_shards:
        return None
    parts = []
    for s in range(n_shards):
        shard = folder / f"shard-{s:05d}.npy"
        try:
            data = shard.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != digests[s]:
            if repair:
                from ...utils.console import get_logger

                get_logger("probe").warning(
                    "embedding cache: %s does not match the checksum recorded when it was written (it changed "
                    "since); embedding its images again", shard)
                shard.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
            return None
        try:
            arr = np.load(io.BytesIO(data))
        except (OSError, ValueError):
            return None
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(axis=-1).sum()) if arr.ndim == 2 else int((~np.isfinite(arr)).sum())
            raise CacheError(f"embedding cache shard {shard} holds NaN or infinite values ({bad} row(s)) that match "
                             f"its checksum, so they were written so; delete {folder} and embed again (on a GPU, "
                             f"float16 overflow is the usual cause: use bfloat16 or --device cpu)")
        parts.append(arr)
    vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    if vectors.shape != (len(plan["img_ids"]), dim):
        return None
    return EmbeddingSet(split=split, view=view, key=key, path=folder, img_ids=list(plan["img_ids"]),
                        vectors=vectors, errors=[stored_exclusion(e) for e in meta.get("errors", [])], hit=True)


# ---------------------------------------------------------------------------------------------
# Finding a cell's embeddings without building its backbone
# ---------------------------------------------------------------------------------------------
# An entry's key hashes the built embedder's identity (weights hash, preprocessing read from the
# model's config ...), which is only known once the model is loaded. A probe cell whose vectors are
# cached must not load a multi-GB backbone (nor occupy a GPU) to find that out, so every answered
# request is also recorded under a key of what the cell *asks* for (backbone, weights setting and
# the stamp of a local weights file, options, size, device precision, dataset content, views) ->
# the entries it was answered with. A hub model re-downloaded at another revision under the same
# name is not noticed by this record: clear the backbone's cache folder (or pass --weights PATH).
REQUEST_FORMAT = 1


def request_path(backbone: str, material: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({**material, "request_format": REQUEST_FORMAT}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:24]
    return cache_dir("embeddings") / safe_name(backbone) / "requests" / f"{digest}.json"


def remember_request(backbone: str, material: dict[str, Any], sets: dict[str, list[EmbeddingSet]],
                     backbone_record: dict[str, Any]) -> None:
    """Record which complete entries answered ``material`` (and what produced them)."""
    root = cache_dir("embeddings")
    entries = {split: [{"view": s.view, "key": s.key, "folder": s.path.relative_to(root).as_posix()} for s in views]
               for split, views in sets.items()}
    record = {"material": material, "entries": entries, "backbone": backbone_record, "request_format": REQUEST_FORMAT}
    atomic_write_text(request_path(backbone, material), json.dumps(record, indent=1, default=str))


def find_request(backbone: str, material: dict[str, Any]) -> tuple[dict[str, list[EmbeddingSet]], dict[str, Any]] | None:
    """The embedding sets that answered ``material`` before and the record of the backbone that
    produced them, read without building it; None unless every entry is still complete."""
    path = request_path(backbone, material)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("material") != json.loads(json.dumps(material, default=str)):
        return None
    root = cache_dir("embeddings")
    sets: dict[str, list[EmbeddingSet]] = {}
    try:
        for split, views in record["entries"].items():
            sets[split] = []
            for entry in views:
                found = _read_complete(root / entry["folder"], split, int(entry["view"]), entry["key"])
                if found is None:
                    return None
                sets[split].append(found)
    except (KeyError, TypeError, ValueError):
        return None
    return sets, dict(record.get("backbone") or {})
