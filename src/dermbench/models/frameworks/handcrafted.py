"""Handcrafted features (no framework, no weights): a baseline probe backbone.

The floor every learned backbone has to beat. Computed with numpy/scipy on the cached uint8
pixels (224 px, centre crop by default):

* **colour** — mean, std and skewness of R, G, B and of H, S, V; 8-bin histograms of H, S, V;
  lesion-minus-surrounding mean colour (the "dark spot on skin" contrast); colour spread inside
  the lesion (the "C" of the ABCD rule).
* **shape** — from a simple segmentation: Otsu threshold on a blurred grey image, the darker side,
  largest connected component, holes filled. Area fraction, compactness (perimeter² / 4πA),
  eccentricity and orientation-free asymmetry (overlap after mirroring across both principal
  axes — the "A" of ABCD), border irregularity (coefficient of variation of the radius along
  the border — the "B"), distance of the lesion centroid from the image centre, whether the
  mask touches the image border.
* **texture** — gradient magnitude statistics, grey-level co-occurrence contrast / homogeneity /
  energy at distance 1 (horizontal and vertical, 16 grey levels), and a 16-bin histogram of the
  8-neighbour local binary pattern.

If the segmentation finds nothing usable (uniform image), the shape block is zero and
``segmentation_ok`` is 0 — the feature says so instead of failing the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..embedders.base import Embedder
from ..spec import ModelSpec

FEATURE_VERSION = 1


def _feature_names() -> list[str]:
    names: list[str] = []
    for space in ("r", "g", "b", "h", "s", "v"):
        names += [f"{space}_mean", f"{space}_std", f"{space}_skew"]
    for space in ("h", "s", "v"):
        names += [f"{space}_hist{i}" for i in range(8)]
    names += ["contrast_r", "contrast_g", "contrast_b", "lesion_colour_std_r", "lesion_colour_std_g",
              "lesion_colour_std_b", "lesion_colour_spread"]
    names += ["segmentation_ok", "area_fraction", "compactness", "eccentricity", "asymmetry_major",
              "asymmetry_minor", "border_irregularity", "centroid_offset", "touches_border"]
    names += ["grad_mean", "grad_std", "grad_p90"]
    names += [f"glcm_{m}_{d}" for d in ("h", "v") for m in ("contrast", "homogeneity", "energy")]
    names += [f"lbp_hist{i}" for i in range(16)]
    return names


FEATURE_NAMES = _feature_names()


def _skew(x: np.ndarray) -> float:
    sd = x.std()
    return float(((x - x.mean()) ** 3).mean() / (sd ** 3)) if sd > 1e-8 else 0.0


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] (H×W×3) -> HSV in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(-1)
    minc = rgb.min(-1)
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.maximum(maxc, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, maxc], -1)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises between-class variance)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1e-12)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def segment_lesion(grey: np.ndarray) -> np.ndarray:
    """Boolean lesion mask: Otsu on a blurred grey image, darker side, largest component, filled."""
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(grey, sigma=2.0)
    if blurred.max() - blurred.min() < 1e-3:
        return np.zeros_like(grey, dtype=bool)
    mask = blurred < otsu_threshold(blurred)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(grey, dtype=bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    # prefer the large component nearest the centre (dermoscopy centres the lesion; dark
    # vignette corners are large too)
    h, w = grey.shape
    centres = ndimage.center_of_mass(mask, labels, index=np.arange(1, n + 1))
    dist = np.array([np.hypot(cy - h / 2, cx - w / 2) for cy, cx in centres]) / np.hypot(h / 2, w / 2)
    score = sizes / sizes.max() - 0.5 * dist
    best = int(np.argmax(score)) + 1
    return ndimage.binary_fill_holes(labels == best)


def _shape_features(mask: np.ndarray) -> list[float]:
    from scipy import ndimage

    h, w = mask.shape
    area = float(mask.sum())
    if area < 20 or area > 0.98 * h * w:
        return [0.0] * 9
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    border = mask & ~ndimage.binary_erosion(mask)
    perimeter = float(border.sum())
    compactness = perimeter ** 2 / (4 * np.pi * area)
    cov = np.cov(np.stack([ys - cy, xs - cx]))
    evals, evecs = np.linalg.eigh(cov)
    evals = np.maximum(evals, 1e-9)
    eccentricity = float(np.sqrt(1 - evals[0] / evals[1]))
    # asymmetry: mirror the lesion across each principal axis through its centroid
    coords = np.stack([ys - cy, xs - cx])
    asym = []
    for axis in (evecs[:, 1], evecs[:, 0]):
        normal = np.array([-axis[1], axis[0]])
        proj = normal @ coords
        mirrored = coords - 2 * np.outer(normal, proj)
        my = np.clip(np.round(mirrored[0] + cy).astype(int), 0, h - 1)
        mx = np.clip(np.round(mirrored[1] + cx).astype(int), 0, w - 1)
        overlap = mask[my, mx].sum()
        asym.append(1.0 - overlap / area)
    by, bx = np.nonzero(border)
    radii = np.hypot(by - cy, bx - cx)
    irregularity = float(radii.std() / max(radii.mean(), 1e-9))
    offset = float(np.hypot(cy - h / 2, cx - w / 2) / np.hypot(h / 2, w / 2))
    touches = float(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    return [1.0, area / (h * w), float(compactness), eccentricity, float(asym[0]), float(asym[1]),
            irregularity, offset, touches]


def _glcm(q: np.ndarray, dy: int, dx: int, levels: int = 16) -> list[float]:
    a = q[: q.shape[0] - dy, : q.shape[1] - dx].ravel()
    b = q[dy:, dx:].ravel()
    m = np.bincount(a * levels + b, minlength=levels * levels).reshape(levels, levels).astype(np.float64)
    m = m + m.T
    m /= max(m.sum(), 1.0)
    i, j = np.indices(m.shape)
    contrast = float((m * (i - j) ** 2).sum())
    homogeneity = float((m / (1.0 + np.abs(i - j))).sum())
    energy = float(np.sqrt((m ** 2).sum()))
    return [contrast, homogeneity, energy]


def _lbp_hist(grey: np.ndarray) -> list[float]:
    centre = grey[1:-1, 1:-1]
    code = np.zeros(centre.shape, dtype=np.int32)
    shifts = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    h, w = grey.shape
    for bit, (dy, dx) in enumerate(shifts):
        neighbour = grey[1 + dy: h - 1 + dy, 1 + dx: w - 1 + dx]
        code |= (neighbour >= centre).astype(np.int32) << bit
    hist = np.bincount((code // 16).ravel(), minlength=16).astype(np.float64)
    return list(hist / max(hist.sum(), 1.0))


def image_features(pixels: np.ndarray) -> np.ndarray:
    """Feature vector (``len(FEATURE_NAMES)``) of one uint8 H×W×3 image."""
    from scipy import ndimage

    rgb = pixels.astype(np.float64) / 255.0
    hsv = rgb_to_hsv(rgb)
    feats: list[float] = []
    for arr in (rgb, hsv):
        for c in range(3):
            x = arr[..., c].ravel()
            feats += [float(x.mean()), float(x.std()), _skew(x)]
    for c in range(3):
        hist = np.histogram(hsv[..., c], bins=8, range=(0.0, 1.0))[0].astype(np.float64)
        feats += list(hist / hist.sum())
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    mask = segment_lesion(grey)
    if mask.any() and (~mask).any():
        inside, outside = rgb[mask], rgb[~mask]
        contrast = list(outside.mean(0) - inside.mean(0))
        spread = list(inside.std(0))
        feats += contrast + spread + [float(np.linalg.norm(spread))]
    else:
        feats += [0.0] * 7
    feats += _shape_features(mask)
    gy = ndimage.sobel(grey, axis=0)
    gx = ndimage.sobel(grey, axis=1)
    grad = np.hypot(gx, gy)
    feats += [float(grad.mean()), float(grad.std()), float(np.percentile(grad, 90))]
    q = np.clip((grey * 16).astype(np.int64), 0, 15)
    feats += _glcm(q, 0, 1) + _glcm(q, 1, 0)
    feats += _lbp_hist(grey)
    out = np.asarray(feats, dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _forward(batch: Any) -> np.ndarray:
    array = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"handcrafted features need uint8 [B, 3, H, W] batches, got {array.shape}")
    images = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return np.stack([image_features(img) for img in images])


def build_embedder(spec: ModelSpec, *, weights: str, image_size: int | None = None, resize_mode: str = "crop",
                   **options: Any) -> Embedder:
    """The handcrafted baseline (``weights`` must be ``default``: it has none; no other options)."""
    if weights not in ("default", "none"):
        raise ValueError(f"the handcrafted baseline has no weights; got weights={weights!r}")
    if options:
        raise ValueError(f"the handcrafted baseline takes no options; got {sorted(options)}")
    return Embedder(name=spec.name, weights_identity=f"none (handcrafted features v{FEATURE_VERSION})",
                    embed_dim=len(FEATURE_NAMES), image_size=int(image_size or 224), resize_mode=resize_mode,
                    input_kind="uint8", forward=_forward,
                    details={"features": f"colour/shape/texture v{FEATURE_VERSION}", "precision": "float64 numpy", "n_features": len(FEATURE_NAMES)})
