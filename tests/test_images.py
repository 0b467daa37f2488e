"""Image decoding to RGB uint8: every accepted format/depth/layout, and every kind of bad file."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from preprocessing.errors import BadInput
from preprocessing.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    decode_rgb8,
    image_size,
    is_image_file,
    read_rgb8,
    to_rgb8,
)

# 16-bit -> 8-bit is round(v / 257), worked out by hand:
#   0 -> 0 ; 128 -> 0.498 -> 0 ; 129 -> 0.502 -> 1 ; 25828 -> 100.498 -> 100 ; 25829 -> 100.502 -> 101 ;
#   65535 -> 255
V16 = np.array([0, 128, 129, 25828, 25829, 65535], np.uint16)
V8 = np.array([0, 0, 1, 100, 101, 255], np.uint8)


def rgb_pattern(h=6, w=5):
    """Distinct values per channel so a swapped channel order shows."""
    r = np.arange(h * w, dtype=np.uint8).reshape(h, w) * 3
    return np.stack([r, 255 - r, np.full_like(r, 77)], axis=-1)


def write(path, data):
    path.write_bytes(data)
    return str(path)


def encode(ext, array):
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


def expect_bad(path, tag, **kwargs):
    with pytest.raises(BadInput) as info:
        read_rgb8(path, **kwargs)
    err = info.value
    assert err.reason.startswith(tag + ":"), err.reason
    assert err.path == str(path) and str(path) in str(err)
    return err


# ---------------------------------------------------------------- formats that decode

def test_png_8bit_rgb_channel_order(tmp_path):
    rgb = rgb_pattern()
    path = write(tmp_path / "a.png", encode(".png", rgb[:, :, ::-1]))  # cv2 writes BGR
    out = read_rgb8(path)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, rgb)


def test_png_16bit_gray_rounding(tmp_path):
    path = write(tmp_path / "g16.png", encode(".png", V16[None, :]))
    out = read_rgb8(path)
    assert out.shape == (1, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[0, :, c], V8)


def test_png_16bit_rgb(tmp_path):
    # R carries V16, G the reversed values, B a constant 257*7 = 1799 -> exactly 7
    rgb16 = np.stack([V16, V16[::-1], np.full(6, 1799, np.uint16)], axis=-1)[None]
    path = write(tmp_path / "c16.png", encode(".png", rgb16[:, :, ::-1]))
    out = read_rgb8(path)
    np.testing.assert_array_equal(out[0, :, 0], V8)
    np.testing.assert_array_equal(out[0, :, 1], V8[::-1])
    np.testing.assert_array_equal(out[0, :, 2], np.full(6, 7))


def test_tiff_16bit_rgb(tmp_path):
    rgb16 = np.stack([V16, V16[::-1], np.full(6, 65535, np.uint16)], axis=-1)[None]
    path = write(tmp_path / "c16.tif", encode(".tiff", rgb16[:, :, ::-1]))
    out = read_rgb8(path)
    np.testing.assert_array_equal(out[0, :, 0], V8)
    np.testing.assert_array_equal(out[0, :, 1], V8[::-1])
    np.testing.assert_array_equal(out[0, :, 2], np.full(6, 255))


def test_tiff_8bit_and_float(tmp_path):
    rgb = rgb_pattern()
    np.testing.assert_array_equal(read_rgb8(write(tmp_path / "a.tiff", encode(".tiff", rgb[:, :, ::-1]))), rgb)
    # float samples: clip to [0, 1] then * 255, rounded: 0 -> 0, 0.5 -> 127.5 -> 128, 1 -> 255, 2 -> 255, -1 -> 0
    f = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    out = read_rgb8(write(tmp_path / "f.tif", encode(".tiff", f)))
    np.testing.assert_array_equal(out[0, :, 1], [0, 128, 255, 255, 0])


def test_grayscale_png_repeats_channels(tmp_path):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    out = read_rgb8(write(tmp_path / "g.png", encode(".png", gray)))
    assert out.shape == (5, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_png_drops_alpha(tmp_path):
    rgb = rgb_pattern()
    alpha = np.zeros(rgb.shape[:2], np.uint8)  # fully transparent: colours must survive, not be composited
    alpha[0, 0] = 255
    bgra = np.dstack([rgb[:, :, ::-1], alpha])
    out = read_rgb8(write(tmp_path / "a.png", encode(".png", bgra)))
    np.testing.assert_array_equal(out, rgb)


def test_gray_alpha_and_palette_png(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    la = Image.fromarray(np.dstack([gray, np.full_like(gray, 9)]), "LA")
    buf = io.BytesIO()
    la.save(buf, "PNG")
    out = decode_rgb8(buf.getvalue(), "la.png")
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    rgb = rgb_pattern(4, 4)
    pal = Image.fromarray(rgb, "RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    expected = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(decode_rgb8(buf.getvalue(), "p.png"), expected)


def test_jpeg_rgb_order_and_gray(tmp_path):
    red = np.zeros((16, 16, 3), np.uint8)
    red[:, :, 0] = 250  # pure red in RGB
    out = read_rgb8(write(tmp_path / "r.jpg", encode(".jpg", red[:, :, ::-1])))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[:, :, 0].min() > 200 and out[:, :, 2].max() < 50  # R stays in channel 0 (lossy, so a margin)
    gray = np.full((8, 8), 120, np.uint8)
    out = read_rgb8(write(tmp_path / "g.jpeg", encode(".jpeg", gray)))
    assert out.shape == (8, 8, 3) and np.abs(out.astype(int) - 120).max() <= 2


def test_uppercase_extension_and_listing():
    assert is_image_file("X.PNG") and is_image_file("a.TIFF") and is_image_file("b.jpeg")
    assert not is_image_file("notes.txt") and not is_image_file("mask.npy") and not is_image_file("png")
    assert set(IMAGE_EXTENSIONS) >= {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def test_to_rgb8_rejects_unsupported_arrays():
    with pytest.raises(ValueError, match="sample type"):
        to_rgb8(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="shape"):
        to_rgb8(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_rgb8(np.zeros((2,), np.uint8))


def test_signed_16bit_tiff_is_reported_as_unsupported(tmp_path):
    path = write(tmp_path / "s.tif", encode(".tiff", np.full((3, 3), -5, np.int16)))
    expect_bad(path, "unsupported_image")


# ---------------------------------------------------------------- bad files

def test_zero_byte_file(tmp_path):
    expect_bad(write(tmp_path / "empty.png", b""), "empty_file")


def test_truncated_png(tmp_path):
    data = encode(".png", rgb_pattern(40, 40))
    expect_bad(write(tmp_path / "half.png", data[: len(data) // 2]), "corrupt_image")
    # cut inside the header chunks: still an image file, damaged -> corrupt, not "not an image"
    expect_bad(write(tmp_path / "head.png", data[:20]), "corrupt_image")


def test_truncated_jpeg(tmp_path):
    data = encode(".jpg", rgb_pattern(40, 40))
    expect_bad(write(tmp_path / "half.jpg", data[: len(data) // 2]), "corrupt_image")


def test_text_file_named_png(tmp_path):
    expect_bad(write(tmp_path / "readme.png", b"this is not an image\n" * 10), "not_an_image")


def test_missing_file_and_directory(tmp_path):
    expect_bad(str(tmp_path / "nope.png"), "unreadable")
    (tmp_path / "dir.png").mkdir()
    expect_bad(str(tmp_path / "dir.png"), "not_a_file")


def test_over_pixel_limit_small_max_pixels(tmp_path):
    path = write(tmp_path / "big.png", encode(".png", rgb_pattern(10, 10)))  # 100 px
    err = expect_bad(path, "too_large", max_pixels=99)
    assert "100" in err.reason and "99" in err.reason
    assert read_rgb8(path, max_pixels=100).shape == (10, 10, 3)  # the limit itself is allowed


def _png_header_only(width, height):
    """A 68-byte PNG whose IHDR claims width x height (8-bit RGB) with a token IDAT: no real pixels."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
            + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_claiming_huge_size_is_refused_before_decoding(tmp_path):
    # 12000 x 12000 = 144 MP > MAX_PIXELS (100 MP): decoding it would need ~432 MB; the header alone decides.
    data = _png_header_only(12000, 12000)
    assert len(data) < 100
    assert image_size(data, "x.png") == (12000, 12000)
    err = expect_bad(write(tmp_path / "bomb.png", data), "too_large")
    assert "12000x12000" in err.reason and str(MAX_PIXELS) in err.reason
    # 100000 x 100000 = 10 GP: Pillow's own bomb guard fires while reading the header -> also too_large
    expect_bad(write(tmp_path / "bomb2.png", _png_header_only(100_000, 100_000)), "too_large")


def test_header_only_png_under_the_limit_is_corrupt_not_crash(tmp_path):
    # same fake file, small claimed size: passes the size check, then the decoder finds no pixels
    expect_bad(write(tmp_path / "fake.png", _png_header_only(50, 40)), "corrupt_image")


# ---------------------------------------------------------------- tensorflow-io's compiled ops

def test_tensorflow_io_decodes_a_real_tiff(tmp_path):
    import tensorflow as tf
    import tensorflow_io as tfio

    rgb = rgb_pattern(7, 9)
    data = encode(".tiff", rgb[:, :, ::-1])
    (tmp_path / "t.tiff").write_bytes(data)
    decoded = tfio.experimental.image.decode_tiff(tf.io.read_file(str(tmp_path / "t.tiff")))
    out = decoded.numpy()
    assert out.dtype == np.uint8 and out.shape == (7, 9, 4)  # libtiff's RGBA reader
    np.testing.assert_array_equal(out[:, :, :3], rgb)
    assert (out[:, :, 3] == 255).all()
    np.testing.assert_array_equal(out[:, :, :3], read_rgb8(str(tmp_path / "t.tiff")))
