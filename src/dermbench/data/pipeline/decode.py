"""Decoding one image at the working size: the read path of every paradigm (PRODUCT §10).

:func:`load_image` is reduced-size JPEG decoding (Pillow ``draft``, i.e. libjpeg DCT scaling by
1/2, 1/4 or 1/8, chosen so the decoded image is still at least the working size) before an
antialiased bicubic resize, EXIF orientation and colour-mode normalisation (via
:func:`dermbench.data.images.open_rgb`), then a :class:`ResizePolicy`.

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
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import open_rgb

RESIZE_MODES = ("crop", "pad", "squash")
#: Antialiased bicubic: Pillow widens the kernel when downscaling, so this is a proper low-pass.
RESAMPLE = Image.Resampling.BICUBIC
#: ResizePolicy.interpolation -> Pillow filter (both antialiased when downscaling)
RESAMPLE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
#: Reduced decoding keeps at least ``DRAFT_FACTOR`` × the working size before the resize. 1 is
#: the fastest setting that stays within the stated tolerance (see the module docstring).
DRAFT_FACTOR = 1
#: Padding colour for ``mode="pad"`` (black, as torchvision's ``Pad`` default).
PAD_FILL = (0, 0, 0)


@dataclass(frozen=True)
class ResizePolicy:
    """How an image becomes a ``size`` × ``size`` square.

    ``crop``: aspect-preserving resize of the short side to ``size``, then a centre crop (the
    default; no distortion, loses the edges of the long side). ``pad``: the long side fits
    ``size``, the rest is padded with black (keeps the whole lesion field). ``squash``: resize
    both sides to ``size`` regardless of aspect ratio — the distortion the study used, kept for
    reproducing it. ``crop_from`` (crop mode only): first resize the short side to ``crop_from``
    (the long side to ``int(crop_from * long / short)``), then cut the centre ``size`` square —
    torchvision's ``Resize(crop_from)`` + ``CenterCrop(size)``, as the study fed DINOv2/DINOv3
    (256 -> 224); the border it cuts away is lost.
    """

    size: int = 224
    mode: str = "crop"
    crop_from: int | None = None
    interpolation: str = "bicubic"  # or "bilinear" (the study's CNN loaders: torchvision Resize's default)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or self.size < 8:
            raise ValueError(f"ResizePolicy.size must be an integer >= 8, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))  # numpy ints from configs -> int
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"ResizePolicy.mode must be one of {', '.join(RESIZE_MODES)}; got {self.mode!r}")
        if self.crop_from is not None:
            if self.mode != "crop" or int(self.crop_from) < self.size:
                raise ValueError(f"ResizePolicy.crop_from needs mode crop and crop_from >= size ({self.size}); "
                                 f"got mode {self.mode!r}, crop_from {self.crop_from!r}")
            object.__setattr__(self, "crop_from", int(self.crop_from))
        if self.interpolation not in RESAMPLE_FILTERS:
            raise ValueError(f"ResizePolicy.interpolation must be one of {', '.join(RESAMPLE_FILTERS)}; "
                             f"got {self.interpolation!r}")

    def key(self) -> str:
        """Short, file-name safe identity of the pixels this policy produces, e.g. ``crop224``
        (``crop224from256`` with ``crop_from``)."""
        return (f"{self.mode}{self.size}" + (f"from{self.crop_from}" if self.crop_from else "")
                + ("" if self.interpolation == "bicubic" else f"-{self.interpolation}"))

    @property
    def decode_side(self) -> int:
        """The smallest side a reduced JPEG decode may keep (the largest size the policy resizes to)."""
        return max(self.size, self.crop_from or 0)


def load_image(path: str | Path, policy: ResizePolicy = ResizePolicy()) -> np.ndarray:
    """Read one image as a uint8 ``size × size × 3`` array according to ``policy``.

    JPEGs are decoded at reduced size (DCT scaling) no smaller than the working size; see the
    module docstring for the measured tolerance. Raises :class:`~dermbench.errors.ImageReadError`
    (reason ``missing_image``, ``truncated_image``, ``unreadable_image`` ...) for a file that
    cannot be used.
    """
    side = policy.decode_side * DRAFT_FACTOR
    img = open_rgb(path, draft_size=(side, side))
    return apply_policy(img, policy)


def apply_policy(img: Image.Image, policy: ResizePolicy) -> np.ndarray:
    """Resize an RGB ``PIL.Image`` to the policy's square; returns a contiguous uint8 HxWx3 array."""
    s = policy.size
    w, h = img.size
    resample = RESAMPLE_FILTERS[policy.interpolation]
    if policy.crop_from:
        # torchvision Resize(crop_from) (short side; long side truncated) + CenterCrop(size), literally
        r = policy.crop_from
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        resized = img.resize((nw, nh), resample)
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        out = resized.crop((left, top, left + s, top + s))
    elif policy.mode == "squash":
        out = img.resize((s, s), resample)
    elif policy.mode == "crop":
        # Resize only the central square of the source: identical to resize-then-crop, cheaper.
        short = min(w, h)
        left, top = (w - short) / 2.0, (h - short) / 2.0
        out = img.resize((s, s), resample, box=(left, top, left + short, top + short))
    else:  # pad
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        inner = img.resize((nw, nh), resample)
        out = Image.new("RGB", (s, s), PAD_FILL)
        out.paste(inner, ((s - nw) // 2, (s - nh) // 2))
    arr = np.array(out, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    if arr.shape != (s, s, 3):  # defensive: the rest of the pipeline relies on this shape
        raise ValueError(f"resize produced {arr.shape}, expected {(s, s, 3)}")
    return arr


def load_image_full(path: str | Path, policy: ResizePolicy = ResizePolicy()) -> np.ndarray:
    """Reference path: full-resolution decode + the same resize (for tolerance checks)."""
    return apply_policy(open_rgb(path), policy)
