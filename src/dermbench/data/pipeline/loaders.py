"""Torch datasets over one split and the loader factory (torch is imported lazily).

:func:`make_loader` returns a ``torch.utils.data.DataLoader`` over one split, reading the image
cache (memory map re-opened lazily in each worker, never pickled) or decoding on the fly, applying a
transform to a **uint8 CHW tensor** (what ``torchvision.transforms.v2`` takes natively) and
yielding ``{"image", "label", "img_id", "index"}`` batches. Images that failed to decode are left
out and listed in ``loader.errors`` as :class:`~dermbench.data.exclusions.Exclusion` records;
nothing is ever substituted.

Typical use in a paradigm::

    policy = ResizePolicy(224, "crop")
    cache = build_image_cache(ds, policy)                     # once; later calls are cache hits
    train = make_loader(ds, "train", policy=policy, transform=train_tf, shuffle=True,
                        workers=2, seed=run_seed, device=device, drop_last=True)
    val = make_loader(ds, "validation", policy=policy, transform=eval_transform(mean, std),
                      workers=2, device=device)
    dataset, excluded = without_unreadable(ds, cache.errors)  # report them with the run
    for batch in train: batch["image"], batch["label"], batch["img_id"], batch["index"]
"""

from __future__ import annotations

import random
import sys
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ...utils.console import get_logger
from ..dataset import LesionDataset
from ..exclusions import Exclusion
from .decode import ResizePolicy, load_image
from .image_cache import ImageCache, build_image_cache

_log = get_logger("data")


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
        """One image ``[3, H, W]`` or a batch ``[B, 3, H, W]``, on whatever device it is (the
        training loop normalises uint8 batches on the GPU with this same object)."""
        import torch

        if isinstance(image, np.ndarray):
            image = _to_chw_tensor(image)
        if self._tensors is None:  # built lazily so the object stays cheap to pickle
            self._tensors = {}
        key = str(image.device)
        if key not in self._tensors:
            self._tensors[key] = (torch.tensor(self.mean, dtype=torch.float32, device=image.device).view(3, 1, 1),
                                  torch.tensor(self.std, dtype=torch.float32, device=image.device).view(3, 1, 1))
        mean, std = self._tensors[key]
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


def keep_uint8(image: Any) -> Any:
    """Loader transform that leaves the cached pixels as they are (uint8 CHW): batches travel to the
    device as uint8 (a quarter of the bytes of float32 in shared memory, pinned memory and the
    host-to-device copy) and are normalised there with :func:`eval_transform` (which takes batches)."""
    if isinstance(image, np.ndarray):
        return _to_chw_tensor(image)
    return image


class EpochSeededImages:
    """Map-style dataset wrapper for a loader that is built once and iterated every epoch.

    With ``persistent_workers`` a worker keeps its RNG state from one epoch to the next, so an
    epoch's augmentations would depend on the epochs before it (and a resumed run would differ
    from an uninterrupted one). :meth:`set_epoch_seed` publishes the epoch's base seed in shared
    memory before the epoch's iterator starts; each worker reseeds itself from it on its first item
    of the epoch exactly as a freshly started worker would (``torch.manual_seed(base + worker_id)``,
    then :func:`seed_worker`). In the main process (no workers) nothing is reseeded: the caller
    seeds the global RNGs.
    """

    def __init__(self, images: Any):
        import multiprocessing

        self.images = images
        self._base_seed = multiprocessing.RawValue("q", -1)  # fork/spawn workers inherit it
        self._applied: int | None = None

    def set_epoch_seed(self, base_seed: int) -> None:
        self._base_seed.value = int(base_seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            base = int(self._base_seed.value)
            if base >= 0 and base != self._applied:
                import torch

                torch.manual_seed(base + info.id)
                seed_worker(info.id)
                self._applied = base
        return self.images[i]

    # what callers read from a loader's dataset
    @property
    def labels(self) -> np.ndarray:
        return self.images.labels

    @property
    def img_ids(self) -> list[str]:
        return self.images.img_ids

    @property
    def errors(self) -> list[Exclusion]:
        return self.images.errors


class CachedSplitImages:
    """Map-style dataset over one split, reading the image cache. The memory map is opened
    lazily in each process (the pickled state holds only the cache's path and row numbers)."""

    def __init__(self, cache: ImageCache, split: str, frame: pd.DataFrame, transform: Callable | None):
        failed = {e.img_id for e in cache.errors_for(split)}
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
    (``use_cache=False``). An unreadable image raises :class:`~dermbench.errors.ImageReadError`:
    never substituted."""

    def __init__(self, split: str, frame: pd.DataFrame, policy: ResizePolicy, transform: Callable | None):
        self.split = split
        self.policy = policy
        self.img_ids = [str(i) for i in frame["img_id"]]
        self.paths = [str(p) for p in frame["path"]]
        self.positions = np.arange(len(self.img_ids), dtype=np.int64)
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.transform = transform or _ToFloat()
        self.errors: list[Exclusion] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = _to_chw_tensor(load_image(self.paths[i], self.policy))
        return {"image": self.transform(image), "label": int(self.labels[i]),
                "img_id": self.img_ids[i], "index": int(i)}


def make_loader(
    dataset: LesionDataset,
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
    epoch_seeded: bool = False,
) -> Any:
    """A ``DataLoader`` over ``dataset.splits[split]`` yielding dict batches:

    ``image`` float ``[B, 3, H, W]`` (``transform`` applied to each **uint8 CHW tensor**; default:
    scaled to [0, 1]), ``label`` long ``[B]``, ``img_id`` list of str, ``index`` long ``[B]`` (row in
    ``dataset.splits[split]``).

    With ``use_cache`` (default) the split's images come from :func:`build_image_cache` (built on
    first use, for all splits at once). Images that failed to decode are left out and listed in
    ``loader.errors`` as :class:`~dermbench.data.exclusions.Exclusion` records — report them with
    the dataset's own exclusions.
    ``loader.dataset.labels`` / ``.img_ids`` give the loader's rows in order (a ``sampler``
    indexes these positions). With ``workers > 0`` shuffling and augmentation are reproducible
    for a given ``seed`` (seeded ``torch.Generator`` + :func:`seed_worker`); with ``workers=0``
    augmentation draws from the process's global RNGs, which the caller seeds (as the paradigms
    do with their run seed). ``pin_memory`` is on only for a CUDA ``device``; ``persistent_workers``
    whenever there are workers, which start with ``fork`` on Linux. ``epoch_seeded`` wraps the split
    in :class:`EpochSeededImages` (a loader built once and iterated per epoch: the caller publishes
    each epoch's worker seed with ``loader.dataset.set_epoch_seed``).
    """
    import torch
    from torch.utils.data import DataLoader

    frame = dataset.split(split)
    if use_cache:
        cache = build_image_cache(dataset, policy, progress=progress)
        ds: Any = CachedSplitImages(cache, split, frame, transform)
        if ds.errors:
            _log.warning(f"{len(ds.errors)} image(s) of split {split!r} failed to decode and are excluded "
                         f"(see loader.errors)")
    else:
        ds = DecodedSplitImages(split, frame, policy, transform)
    if sampler is not None and shuffle:
        raise ValueError("give either shuffle=True or a sampler, not both")
    errors = list(ds.errors)
    if epoch_seeded:
        ds = EpochSeededImages(ds)
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
    loader.errors = errors  # type: ignore[attr-defined]
    return loader
