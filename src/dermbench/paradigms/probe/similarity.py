"""Embeddings for the same-lesion search of ``audit`` and ``prepare --group-similar``.

Every image is embedded at the centre zooms of :data:`dermbench.data.similarity.DEFAULT_VIEWS`
through the probe's own embedding cache (:func:`.embed_cache.embed_split`: sharded, resumable,
locked, keyed by everything that changes the vectors). A zoom is a :class:`ZoomedEmbedder`: the
backbone behind a centre crop of the cached pixels resized back to the input size, with the zoom
in its identity, so each zoom is its own cache entry and the pixel cache is shared by all.

The images are embedded as one split of :func:`dermbench.data.similarity.all_images`, whose
fingerprint is the images' content alone: re-splitting a dataset, or the rewrite that
``prepare --group-similar`` does after grouping, keeps the cached vectors. A warm audit reads
them back instead of running the backbone (``benchmarks/audit.py`` measures cold and warm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...data.dataset import LesionDataset
from ...data.similarity import (ALL_IMAGES, DEFAULT_BACKBONE, DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD, DEFAULT_VIEWS,
                                SimilaritySearch, ViewEmbeddings, all_images)


@dataclass
class ZoomedEmbedder:
    """``embedder`` applied to the centre ``zoom`` of every image (a fraction of the side), resized
    back to the input size (bicubic, antialiased). Has what :func:`.embed_cache.embed_split` reads
    of an embedder; ``zoom`` is part of its identity, hence of the cache key."""

    embedder: Any
    zoom: float

    def __post_init__(self) -> None:
        if not 0.2 <= float(self.zoom) <= 1.0:
            raise ValueError(f"a view zoom is the fraction of the side kept, in [0.2, 1]; got {self.zoom!r}")

    def __getattr__(self, name: str) -> Any:  # name, policy, embed_dim, device, loader_transform ...
        if name == "embedder":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.embedder, name)

    @property
    def identity(self) -> dict[str, Any]:
        identity = dict(self.embedder.identity)
        if float(self.zoom) != 1.0:
            identity["centre_zoom"] = round(float(self.zoom), 4)
        return identity

    def __call__(self, batch: Any) -> np.ndarray:
        return self.embedder(centre_zoom(batch, float(self.zoom)))


def centre_zoom(batch: Any, zoom: float) -> Any:
    """The centre ``zoom`` (fraction of the side) of a ``[B, C, H, W]`` batch, resized back to
    ``H × W``; uint8 stays uint8. ``zoom`` 1 returns the batch unchanged."""
    if zoom >= 1.0:
        return batch
    import torch
    import torch.nn.functional as F

    h, w = batch.shape[-2:]
    ch, cw = max(1, round(h * zoom)), max(1, round(w * zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = batch[..., top:top + ch, left:left + cw]
    was_uint8 = crop.dtype == torch.uint8
    out = F.interpolate(crop.float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0, 255).round_().to(torch.uint8) if was_uint8 else out


def build_view_embedder(backbone: str = DEFAULT_BACKBONE, *, device: str = "auto", options: dict | None = None) -> Any:
    """The backbone of the search on ``device`` (its own weights, eval preprocessing)."""
    from ...models import build_embedder
    from ...utils.device import activate_device, choose_device

    embedder = build_embedder(backbone, **dict(options or {}))
    return embedder.to(activate_device(choose_device(device)))  # cuda:N current before any CUDA use


class LazyEmbedder:
    """The search's backbone, built only when an image has to be embedded.

    What the embedding cache keys on (``name``, ``identity``, ``policy``, ``embed_dim``) is
    remembered from the last build in the user cache, keyed by the backbone, its options, the
    device kind and the installed versions of dermbench and the packages that make the vectors
    (torch, timm ...): a warm audit reads every vector from the cache without loading the model.
    Any change of those versions builds the model again and re-reads its identity."""

    _FIELDS = ("name", "identity", "embed_dim", "image_size", "resize_mode")

    def __init__(self, backbone: str, device: str = "auto", options: dict | None = None):
        self.backbone, self.requested_device, self.options = backbone, device, dict(options or {})
        self._built: Any = None
        self._known = self._read_memo()

    def _memo_path(self) -> Any:
        import hashlib
        import json

        from ... import __version__
        from ...runs.provenance import package_versions
        from ...utils.device import choose_device
        from ...utils.paths import cache_dir

        device_kind = choose_device(self.requested_device).split(":")[0]
        material = json.dumps({"backbone": self.backbone, "options": self.options, "device": device_kind,
                               "dermbench": __version__, "packages": package_versions()}, sort_keys=True, default=str)
        return cache_dir("similarity-backbones") / (hashlib.sha256(material.encode()).hexdigest()[:20] + ".json")

    def _read_memo(self) -> dict[str, Any] | None:
        import json

        try:
            known = json.loads(self._memo_path().read_text())
        except (OSError, ValueError):
            return None
        return known if isinstance(known, dict) and all(k in known for k in self._FIELDS) else None

    @property
    def built(self) -> Any:
        if self._built is None:
            import json

            from ...utils.atomic import atomic_write_text

            self._built = build_view_embedder(self.backbone, device=self.requested_device, options=self.options)
            self._known = {k: getattr(self._built, k) for k in self._FIELDS}
            try:
                atomic_write_text(self._memo_path(), json.dumps(self._known, default=str))
            except OSError:
                pass  # a read-only cache only costs speed
        return self._built

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("backbone", "requested_device", "options"):
            raise AttributeError(name)
        known = self.__dict__.get("_known")
        if known is not None and name in self._FIELDS:
            return known[name]
        if known is not None and name == "policy":
            from ...data.pipeline.decode import ResizePolicy

            return ResizePolicy(size=int(known["image_size"]), mode=str(known["resize_mode"]))
        return getattr(self.built, name)

    def __call__(self, batch: Any) -> np.ndarray:
        return self.built(batch)


def view_embeddings(dataset: LesionDataset, embedder: Any, *, views: Sequence[float] = DEFAULT_VIEWS,
                    batch_size: int = 64, progress: bool = True) -> ViewEmbeddings:
    """Every readable image of ``dataset`` at each of ``views``; ``labels`` are the images' splits.
    An image the pixel cache could not decode has no vector (the audit lists it as unreadable)."""
    from .embed_cache import embed_split

    split_of = {str(i): s for s, df in dataset.splits.items() for i in df["img_id"]}
    whole = all_images(dataset)
    sets = [embed_split(ZoomedEmbedder(embedder, v), whole, ALL_IMAGES, batch_size=batch_size, progress=progress)
            for v in views]
    ids = sets[0].img_ids
    if any(s.img_ids != ids for s in sets[1:]):
        raise RuntimeError("the zoom views of the similarity search disagree on the images they hold; clear the "
                           "embedding cache of this backbone and retry")
    return ViewEmbeddings(ids, [split_of.get(i, ALL_IMAGES) for i in ids], np.stack([s.vectors for s in sets]),
                          tuple(float(v) for v in views), backbone=str(embedder.name),
                          details={"identity": embedder.identity, "cache_keys": [s.key for s in sets],
                                   "cache_hit": all(s.hit for s in sets),
                                   "unreadable": [e.as_dict() for e in sets[0].errors]})


def similarity_search(backbone: str = DEFAULT_BACKBONE, *, threshold: float = DEFAULT_THRESHOLD,
                      neighbours: int = DEFAULT_NEIGHBOURS, views: Sequence[float] = DEFAULT_VIEWS,
                      device: str = "auto", batch_size: int = 64, progress: bool = True) -> SimilaritySearch:
    """A :class:`~dermbench.data.similarity.SimilaritySearch` whose ``embed`` runs ``backbone`` through
    the embedding cache (the backbone is built on first use, once)."""
    built: dict[str, Any] = {}

    def embed(dataset: LesionDataset) -> ViewEmbeddings:
        if "embedder" not in built:
            built["embedder"] = LazyEmbedder(backbone, device=device)
        return view_embeddings(dataset, built["embedder"], views=views, batch_size=batch_size, progress=progress)

    from ...models import resolve

    return SimilaritySearch(embed=embed, backbone=resolve("backbone", backbone).name, threshold=float(threshold),
                            neighbours=int(neighbours), views=tuple(float(v) for v in views))
