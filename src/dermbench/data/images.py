"""Reading lesion images robustly: one decoding path for every paradigm.

``open_rgb`` returns an 8-bit RGB ``PIL.Image`` for any accepted file, whatever its colour mode
(RGBA, LA, palette with transparency, grayscale, 16-bit, CMYK) and EXIF orientation, and raises
:class:`ImageReadError` with a short reason code for anything it cannot read. It never substitutes
another image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError
from .exclusions import (REASON_EMPTY, REASON_MISSING_IMAGE, REASON_TOO_LARGE, REASON_TRUNCATED, REASON_UNREADABLE,
                         REASON_UNSUPPORTED)

# A truncated file must fail loudly rather than decode to a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False
#: Images with more pixels than this are refused before decoding (exclusion ``image_too_large``).
#: Dermoscopic and clinical originals of the public datasets are at most ~25 MP; 100 MP is 300 MB
#: as 8-bit RGB. Pillow's own check only warns up to twice its limit (a 400 MP image decoded to
#: 1.2 GB with a DecompressionBombWarning on the console), so the limit is checked here, from the
#: header, and Pillow's warning is not shown: the exclusion says it instead.
MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# EXIF/ICC/palette chatter from odd files ("Corrupt EXIF data", "Palette images with
# Transparency ...") says nothing about whether the pixels are usable. It is silenced by a
# filter installed once, not by ``warnings.catch_warnings()`` around each decode: that context
# manager swaps process-global state and is not thread-safe, so decoding in a thread pool made
# it restore stale filters and swallow unrelated warnings elsewhere in the program.
for _module in ("TiffImagePlugin", "JpegImagePlugin", "PngImagePlugin", "Image", "ImageFile"):
    warnings.filterwarnings("ignore", category=UserWarning, module=rf"PIL\.{_module}$")

ALLOWED_EXTENSIONS = (".jpg", ".jpeg", ".png")



def to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to 8-bit RGB.

    Transparent pixels are composited over white (a fully opaque alpha channel, as in most
    PAD-UFES-20 RGBA PNGs, leaves the colours untouched). 16-bit and 32-bit grayscale is scaled
    to 8 bits by its full range rather than clipped, so a 16-bit image does not turn white.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.rint(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() == (255, 255):
            return rgba.convert("RGB")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are correct for these.
    return img.convert("RGB")


def open_rgb(path: str | Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open, fully decode, EXIF-orient and convert an image to RGB.

    ``draft_size`` lets JPEG decoding use DCT scaling to a size no smaller than requested (see
    :mod:`dermbench.data.pipeline.decode` for the measured tolerance); other formats ignore it.
    """
    path = Path(path)
    if path.suffix.lower() not in ALLOWED_EXTENSIONS:
        raise ImageReadError(path, REASON_UNSUPPORTED,
                             f"extension {path.suffix!r}; accepted: {', '.join(ALLOWED_EXTENSIONS)}")
    try:
        with Image.open(path) as img:
            if img.format not in ("JPEG", "PNG", "MPO"):
                raise ImageReadError(path, REASON_UNSUPPORTED, f"content is {img.format}, not JPEG/PNG")
            _check_pixels(path, img.width, img.height)
            if draft_size is not None and img.format in ("JPEG", "MPO"):
                _draft_oriented(img, draft_size)
            img.load()
            # exif_transpose returns a new image (rotated, or a copy when upright), so the result
            # is independent of the file closed below and needs no further copy.
            rgb = to_rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError as exc:
        raise ImageReadError(path, REASON_MISSING_IMAGE) from exc
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, REASON_UNREADABLE, "not a recognisable image") from exc
    except OSError as exc:
        msg = str(exc)
        truncated = "truncated" in msg.lower() or "broken data stream" in msg.lower()
        reason = REASON_TRUNCATED if truncated else REASON_UNREADABLE
        raise ImageReadError(path, reason, msg) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning when warnings are errors
        raise ImageReadError(path, REASON_TOO_LARGE, f"more pixels than the limit of {MAX_IMAGE_PIXELS:,} "
                                                     f"(dermbench.data.images.MAX_IMAGE_PIXELS): {exc}") from None
    except (ValueError, SyntaxError) as exc:
        raise ImageReadError(path, REASON_UNREADABLE, str(exc)) from exc
    if rgb.width == 0 or rgb.height == 0:
        raise ImageReadError(path, REASON_EMPTY)
    return rgb


def _check_pixels(path: Path, width: int, height: int) -> None:
    pixels = width * height
    if pixels > MAX_IMAGE_PIXELS:
        raise ImageReadError(path, REASON_TOO_LARGE, f"{width}x{height} = {pixels:,} pixels, more than the limit of "
                                                     f"{MAX_IMAGE_PIXELS:,} (dermbench.data.images.MAX_IMAGE_PIXELS)")


def _draft_oriented(img: Image.Image, size: tuple[int, int]) -> None:
    """Request DCT-scaled decoding, accounting for an EXIF rotation that swaps the axes."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not stop decoding
        orientation = 1
    w, h = size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    img.draft("RGB", (w, h))


def check_image(path: str | Path) -> None:
    """Raise :class:`ImageReadError` if ``path`` would not decode. Uses a reduced JPEG decode,
    which still reads the whole entropy-coded stream, so truncation is detected."""
    open_rgb(path, draft_size=(64, 64))
