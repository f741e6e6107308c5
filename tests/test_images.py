"""open_rgb / load_image: colour modes, EXIF orientation, truncated and garbage files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dermbench.data.exclusions import (REASON_MISSING_IMAGE, REASON_TRUNCATED, REASON_UNREADABLE,
                                       REASON_UNSUPPORTED)
from dermbench.data.images import check_image, open_rgb
from dermbench.data.pipeline.decode import ResizePolicy, load_image
from dermbench.errors import ImageReadError


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.full((h, w, 1), 128, np.float32)], axis=2)
    return rgb.astype(np.uint8)


def _check_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert img.mode == "RGB"
    assert img.size == size
    return np.asarray(img)


def test_rgba_real_transparency_composited_over_white(tmp_path):
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[..., 0] = 200  # red-ish
    arr[:, :10, 3] = 0  # left half fully transparent
    arr[:, 10:, 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(p)
    out = _check_rgb(open_rgb(p), (20, 10))
    assert (out[:, :10] == 255).all()  # transparent -> white, not black
    assert (out[:, 10:] == [200, 0, 0]).all()


def test_rgba_opaque_keeps_colours(tmp_path):
    arr = np.dstack([_gradient(), np.full((48, 64), 255, np.uint8)])
    p = tmp_path / "o.png"
    Image.fromarray(arr, "RGBA").save(p)
    assert (np.asarray(open_rgb(p)) == _gradient()).all()


def test_la_and_l(tmp_path):
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 0] = 40
    la[:4, :, 1] = 255  # top opaque, bottom transparent
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = _check_rgb(open_rgb(tmp_path / "la.png"), (8, 8))
    assert (out[:4] == 40).all() and (out[4:] == 255).all()
    Image.fromarray(np.full((8, 8), 77, np.uint8), "L").save(tmp_path / "l.png")
    assert (_check_rgb(open_rgb(tmp_path / "l.png"), (8, 8)) == 77).all()


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([10, 20, 30, 250, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 4, 8))
    img.info["transparency"] = 0  # index 0 transparent
    p = tmp_path / "p.png"
    img.save(p, transparency=0)
    out = _check_rgb(open_rgb(p), (8, 8))
    assert (out[:, :4] == [250, 0, 0]).all()
    assert (out[:, 4:] == 255).all()


def test_16bit_png_scaled_not_clipped(tmp_path):
    arr = np.full((6, 6), 32768, np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    with Image.open(p) as raw:
        assert raw.mode.startswith("I")
    out = _check_rgb(open_rgb(p), (6, 6))
    assert abs(int(out[0, 0, 0]) - 128) <= 1  # half of the 16-bit range -> mid grey, not white


def _png16(path, arr: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB (colour type 2) or RGBA (6) PNG by hand: Pillow cannot."""
    import struct
    import zlib

    h, w, c = arr.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_and_rgba_png(tmp_path, channels):
    arr = np.zeros((5, 7, channels), np.uint16)
    arr[..., 0], arr[..., 1], arr[..., 2] = 65535, 32768, 256
    if channels == 4:
        arr[..., 3] = 65535
    p = tmp_path / "c16.png"
    _png16(p, arr)
    out = _check_rgb(open_rgb(p), (7, 5))
    assert np.abs(out[0, 0].astype(int) - [255, 128, 1]).max() <= 1  # scaled by the 16-bit range


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    out = _check_rgb(open_rgb(p), (16, 16))
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60
    assert load_image(p, ResizePolicy(8)).shape == (8, 8, 3)


def test_one_bit(tmp_path):
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (0, 0, 8, 4))
    img.save(tmp_path / "b.png")
    out = _check_rgb(open_rgb(tmp_path / "b.png"), (8, 8))
    assert (out[:4] == 255).all() and (out[4:] == 0).all()


def test_grayscale_jpeg_reduced_decode(tmp_path):
    p = tmp_path / "g.jpg"
    Image.fromarray(np.full((400, 300), 90, np.uint8), "L").save(p, quality=95)
    out = load_image(p, ResizePolicy(32))
    assert out.shape == (32, 32, 3) and abs(out.mean() - 90) < 2


def _oriented_jpeg(path, orientation: int) -> None:
    """A 60x40 image (wide) with a red top-left quadrant marker, stored with the given EXIF tag
    such that after correct orientation the marker is top-left and the image is 60 wide."""
    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:20, :30] = [255, 0, 0]
    img = Image.fromarray(upright)
    # Apply the inverse of what exif_transpose will do for each orientation.
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    if inverse[orientation] is not None:
        img = img.transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation(tmp_path, orientation):
    p = tmp_path / f"o{orientation}.jpg"
    _oriented_jpeg(p, orientation)
    out = _check_rgb(open_rgb(p), (60, 40))
    assert out[5:15, 5:25, 0].mean() > 200 and out[5:15, 5:25, 1].mean() < 60  # marker top-left
    assert out[25:, 35:, 0].mean() < 60
    # The same through reduced decoding + squash keeps the orientation.
    small = load_image(p, ResizePolicy(16, "squash"))
    assert small[:6, :6, 0].mean() > 180 and small[10:, 10:, 0].mean() < 80


def _textured_jpeg_bytes(w=320, h=240) -> bytes:
    rng = np.random.default_rng(1)
    arr = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).resize((w, h), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_is_an_error_not_grey(tmp_path):
    data = _textured_jpeg_bytes()
    p = tmp_path / "t.jpg"
    p.write_bytes(data[: len(data) // 2])
    for read in (lambda: open_rgb(p), lambda: load_image(p, ResizePolicy(32)), lambda: check_image(p)):
        with pytest.raises(ImageReadError) as err:
            read()
        assert err.value.reason == REASON_TRUNCATED


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    p = tmp_path / "t.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError) as err:
        open_rgb(p)
    assert err.value.reason == REASON_TRUNCATED


def test_garbage_missing_and_unsupported(tmp_path):
    p = tmp_path / "g.jpg"
    p.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageReadError) as err:
        load_image(p, ResizePolicy(32))
    assert err.value.reason == REASON_UNREADABLE
    with pytest.raises(ImageReadError) as err:
        open_rgb(tmp_path / "none.jpg")
    assert err.value.reason == REASON_MISSING_IMAGE
    gif = tmp_path / "x.jpg"
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    with pytest.raises(ImageReadError) as err:
        open_rgb(gif)
    assert err.value.reason == REASON_UNSUPPORTED
