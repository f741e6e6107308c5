"""Likely same-lesion images by embedding similarity (``audit``, ``prepare --group-similar``).

Two photographs of one lesion at different zooms are not found by exact or perceptual hashes: a
zoom moves every pixel. They are found by comparing image *embeddings* (a pretrained backbone's
pooled features), with two details that matter in practice:

* **Several centre zooms per image.** Each image is embedded at its full view and at centre
  crops that keep ``views`` of its side (default 1.0, 0.85 and 0.7, each resized back to the
  backbone's input size), and two images are compared by the **largest cosine similarity over
  all pairs of their views**. A crop-and-zoom copy of a lesion then meets its original at
  matching scales. On the synthetic calibration set (``benchmarks/audit.py --calibrate``) the
  full view alone gave recall 0.33 at the similarity where three views gave 0.92.
* **A calibrated threshold.** :data:`DEFAULT_THRESHOLD` is the cosine similarity (of
  EfficientNet-Lite0 ImageNet features, the default backbone) at which planted second photographs
  (:func:`rephotograph`: crop + zoom + colour jitter) of synthetic lesions are found with recall
  >= 0.9. Rule: the largest threshold (0.005 grid) keeping recall >= 0.9, less 0.01 as a margin.
  Measured (``benchmarks/audit.py --calibrate``: 600 synthetic images at 256 px, 60 planted pairs,
  seed 0): the rule's threshold is 0.93 (recall 0.900, 4 false pairs of 112,377 distinct-lesion
  pairs across splits); at 0.92 recall is 0.917 with 10 false pairs, and the audit, which lists
  only each image's nearest neighbours, found 55 of 60 with 10 false pairs. On 99 real HAM10000
  dermoscopy images of distinct lesions (the test fixtures) no pair reached 0.92: the highest was
  0.918, and 3 of 4,851 pairs were above 0.90. Different lesions can come that close, so the list is
  for a person to look at, not a verdict. Another backbone needs its own threshold
  (``--similar-threshold``), calibrated the same way.

Every image's nearest neighbours (``neighbours`` of them, default 3) above the threshold are
listed, so the list grows with the number of images, not with the number of pairs. The search is
blocked matrix products of L2-normalised vectors (numpy BLAS); nothing here embeds images: the
caller hands in the vectors (:class:`ViewEmbeddings`) — ``dermbench.paradigms.probe.similarity``
computes them through the probe embedding cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .dataset import LesionDataset

#: centre zooms each image is embedded at (fraction of the side kept); see the module docstring
DEFAULT_VIEWS = (1.0, 0.85, 0.7)
#: default backbone of the search: offline ImageNet weights installed with dermbench
DEFAULT_BACKBONE = "efficientnet_lite0_imagenet"
#: calibrated on synthetic crop + zoom + colour-jitter pairs for DEFAULT_BACKBONE and DEFAULT_VIEWS
#: (benchmarks/audit.py --calibrate: recall 0.917, 10 false pairs; see the module docstring)
DEFAULT_THRESHOLD = 0.92
DEFAULT_NEIGHBOURS = 3
#: query rows per block of the search (each block holds views² matrices of block × n floats)
_BLOCK = 512


@dataclass
class ViewEmbeddings:
    """Embeddings of a set of images at several views: ``vectors[v, i]`` is image ``i`` at view
    ``views[v]``, L2-normalised. ``labels[i]`` says where image ``i`` sits (dataset and split);
    images with equal labels are in the same place (the audit compares only across places)."""

    img_ids: list[str]
    labels: list[str]
    vectors: np.ndarray
    views: tuple[float, ...] = DEFAULT_VIEWS
    backbone: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # identity, cache keys, errors...

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 3 or self.vectors.shape[0] != len(self.views) \
                or self.vectors.shape[1] != len(self.img_ids) or len(self.labels) != len(self.img_ids):
            raise ValueError(f"view embeddings: vectors of shape {self.vectors.shape} do not match "
                             f"{len(self.views)} views x {len(self.img_ids)} images")
        norms = np.linalg.norm(self.vectors, axis=2, keepdims=True)
        self.vectors = self.vectors / np.maximum(norms, 1e-12)

    def __len__(self) -> int:
        return len(self.img_ids)

    @staticmethod
    def concat(parts: Sequence["ViewEmbeddings"]) -> "ViewEmbeddings":
        if not parts:
            raise ValueError("no view embeddings to concatenate")
        views = parts[0].views
        if any(p.views != views for p in parts):
            raise ValueError("view embeddings with different views cannot be compared")
        return ViewEmbeddings([i for p in parts for i in p.img_ids], [lb for p in parts for lb in p.labels],
                              np.concatenate([p.vectors for p in parts], axis=1), views, parts[0].backbone,
                              {"parts": [p.details for p in parts]})


def view_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n_a, n_b)`` largest cosine similarity over every pair of views of L2-normalised
    ``a`` (views, n_a, dim) and ``b`` (views, n_b, dim)."""
    best = None
    for va in a:
        for vb in b:
            s = va @ vb.T
            best = s if best is None else np.maximum(best, s, out=best)
    assert best is not None
    return best


@dataclass(frozen=True)
class SimilarPair:
    """Images ``i`` and ``j`` (positions in the :class:`ViewEmbeddings`), ``i < j``."""

    i: int
    j: int
    similarity: float


def similar_pairs(emb: ViewEmbeddings, *, threshold: float = DEFAULT_THRESHOLD,
                  neighbours: int = DEFAULT_NEIGHBOURS, across_only: bool = True,
                  block: int = _BLOCK) -> list[SimilarPair]:
    """Pairs of likely same-lesion images, most similar first.

    For every image, its ``neighbours`` most similar other images at ``threshold`` or above; with
    ``across_only`` only images with another label (another split or dataset) are candidates. A
    pair found from either side is listed once.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"similarity threshold must be in (0, 1], got {threshold!r}")
    if int(neighbours) < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours!r}")
    n = len(emb)
    labels = pd.factorize(pd.Series(emb.labels, dtype=object))[0]
    found: dict[tuple[int, int], float] = {}
    k = int(neighbours)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = view_similarity(emb.vectors[:, start:stop], emb.vectors)
        rows = np.arange(start, stop)
        sims[rows - start, rows] = -np.inf  # never the image itself
        if across_only:
            sims[labels[start:stop, None] == labels[None, :]] = -np.inf
        sims[sims < threshold] = -np.inf
        if k < n:
            top = np.argpartition(-sims, kth=min(k, n - 1) - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(n), (stop - start, 1))
        for r, cols in enumerate(top):
            for c in cols:
                s = float(sims[r, c])
                if s == -np.inf:
                    continue
                a, b = sorted((start + r, int(c)))
                found[(a, b)] = max(s, found.get((a, b), -1.0))
    pairs = [SimilarPair(a, b, s) for (a, b), s in found.items()]
    pairs.sort(key=lambda p: (-p.similarity, p.i, p.j))
    return pairs


def similarity_components(n: int, pairs: Sequence[SimilarPair]) -> np.ndarray:
    """Connected components of the graph whose edges are ``pairs``: one component index per image
    (an image in no pair is a component of its own)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.asarray([p.i for p in pairs], dtype=np.int64)
    cols = np.asarray([p.j for p in pairs], dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def group_names(components: np.ndarray, img_ids: Sequence[str]) -> list[str | None]:
    """A ``similar_group`` value per image: ``sim-<first img_id of the group>`` for groups of two or
    more images, None for an image alone (named by content, not by a counter, so adding an image
    elsewhere does not rename every group)."""
    first: dict[int, str] = {}
    sizes = np.bincount(components) if len(components) else np.zeros(0, dtype=np.int64)
    for c, img_id in sorted(zip(components.tolist(), img_ids), key=lambda t: (t[0], str(t[1]))):
        first.setdefault(c, str(img_id))
    return [f"sim-{first[c]}" if sizes[c] > 1 else None for c in components.tolist()]


@dataclass
class SimilaritySearch:
    """What a caller hands to :func:`dermbench.data.audit.audit_datasets` or ``prepare`` to run the
    search: ``embed`` turns a dataset (a :class:`~dermbench.data.dataset.LesionDataset`, possibly the
    single-split view of :func:`all_images`) into its :class:`ViewEmbeddings`; the rest are the
    search's settings as recorded."""

    embed: Callable[[Any], ViewEmbeddings]
    backbone: str = DEFAULT_BACKBONE
    threshold: float = DEFAULT_THRESHOLD
    neighbours: int = DEFAULT_NEIGHBOURS
    views: tuple[float, ...] = DEFAULT_VIEWS

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "threshold": float(self.threshold), "neighbours": int(self.neighbours),
                "views": [float(v) for v in self.views],
                "similarity": "largest cosine similarity over every pair of centre-zoom views"}


#: the split name of :func:`all_images`
ALL_IMAGES = "all"


def content_fingerprint(img_sha256: dict[str, str]) -> str:
    """A fingerprint of a set of images by content only (img_id and sha256 of each, not which
    split it is in): the same images keep their embedding-cache entries through a re-split."""
    payload = json.dumps({"kind": "all-images", "images": sorted(img_sha256.items())})
    return hashlib.sha256(payload.encode()).hexdigest()


def all_images(dataset: LesionDataset, img_sha256: dict[str, str] | None = None) -> LesionDataset:
    """The images of ``dataset`` as one split named :data:`ALL_IMAGES`, fingerprinted by content
    alone (:func:`content_fingerprint`), so embeddings cached for it survive a re-split or a
    rewrite of the metadata. ``img_sha256`` (img_id -> sha256) defaults to the dataset manifest."""
    from .dataset import LesionDataset

    if img_sha256 is None and list(dataset.splits) == [ALL_IMAGES]:
        return dataset  # already the all-images view
    frames = [df.assign(_split=s) for s, df in dataset.splits.items() if len(df)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["img_id", "path", "label"])
    duplicated = frame["img_id"].astype(str).duplicated()
    if duplicated.any():
        raise ValueError(f"dataset {dataset.name!r} lists image {frame['img_id'][duplicated].iloc[0]!r} in two "
                         f"rows; the similarity search needs one row per image")
    if img_sha256 is None:
        images = dataset.root / "images"
        img_sha256 = {}
        for img_id, path in zip(frame["img_id"].astype(str), frame["path"]):
            rel = str(_relative(path, images))
            img_sha256[img_id] = dataset.manifest.get(rel) or dataset.manifest.get(img_id) or f"path:{path}"
    return LesionDataset(root=dataset.root, name=dataset.name, splits={ALL_IMAGES: frame.drop(columns="_split")},
                         card=dataset.card, manifest=dataset.manifest, fingerprint=content_fingerprint(img_sha256))


def _relative(path: Any, folder: Any) -> Any:
    from pathlib import Path

    p = Path(path)
    return p.relative_to(folder).as_posix() if p.is_relative_to(folder) else p.as_posix()


#: how :func:`rephotograph` changes an image (the calibration's definition of "the same lesion photographed again")
REPHOTOGRAPH = {"crop_area": (0.7, 0.9), "brightness": (0.8, 1.2), "contrast": (0.8, 1.2), "saturation": (0.8, 1.2)}


def rephotograph(image: Any, rng: np.random.Generator) -> Any:
    """Another photograph of the lesion in ``image`` (a PIL image): a crop keeping 70–90% of the
    area at a random position, zoomed back to the original size (1.05–1.2×), and brightness,
    contrast and saturation each scaled by 0.8–1.2. What the same-lesion search must find
    (``benchmarks/audit.py --calibrate`` plants such pairs; the tests plant one)."""
    from PIL import Image, ImageEnhance

    width, height = image.size
    low, high = REPHOTOGRAPH["crop_area"]
    side = float(np.sqrt(rng.uniform(low, high)))
    cw, ch = max(1, int(width * side)), max(1, int(height * side))
    x0, y0 = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    out = image.convert("RGB").crop((x0, y0, x0 + cw, y0 + ch)).resize((width, height), Image.Resampling.BICUBIC)
    for enhancer, key in ((ImageEnhance.Brightness, "brightness"), (ImageEnhance.Contrast, "contrast"),
                          (ImageEnhance.Color, "saturation")):
        out = enhancer(out).enhance(float(rng.uniform(*REPHOTOGRAPH[key])))
    return out
