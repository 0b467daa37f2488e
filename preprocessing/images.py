"""Decoding images to RGB uint8: the one documented conversion every entry point uses.

Conversion (applied to PNG, JPEG and TIFF alike, pixel grid as stored, EXIF
orientation ignored so masks stay aligned):
- 16-bit samples -> 8-bit by ``round(v / 257)`` (maps 65535 to 255 exactly);
  float samples are clipped to [0, 1] and scaled to 255;
- grayscale -> the value repeated in R, G and B;
- RGBA / gray+alpha -> the alpha channel is dropped (not composited), since
  scientific figures use alpha for padding, not for the content;
- OpenCV's BGR order -> RGB.
Images above ``MAX_PIXELS`` are refused before decoding (decompression bombs).
The size comes from the header via Pillow, which itself refuses headers above
2 x ``PIL.Image.MAX_IMAGE_PIXELS`` (~179 MP): also reported as ``too_large``
(its warning between 89 and 179 MP is silenced: our own limit decides); TIFFs
Pillow cannot open (float32 RGB) are sized from their first directory.
Refused as ``unsupported_image`` from the header: more than 4 samples per pixel,
and formats other than PNG, JPEG, TIFF and BMP (a GIF named .png).
Files are checked from their header before they are read whole (``check_file``): junk named
like an image, or a file larger than any encoding of its header's pixels, is refused having read
a few bytes, so a 2 GB junk ``x.png`` costs no memory.
"""
from __future__ import annotations

import os
import re
import struct
import warnings
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from preprocessing.errors import BadInput

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MAX_PIXELS = 100_000_000  # 100 MP: ~10k x 10k; larger files are refused, not decoded
# The most bytes a supported file can spend per pixel (float64 RGBA, uncompressed: 4 x 8) and what it may
# hold besides its pixels (EXIF, ICC profiles, thumbnails): a larger file is damaged or not what its header
# says, and is refused before it is read whole.
MAX_BYTES_PER_PIXEL = 32
METADATA_ALLOWANCE = 16 << 20
# Leading bytes of the formats we accept: PNG, JPEG, TIFF (little/big endian).
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any decoded array (H,W) / (H,W,1|3|4), uint8/uint16/float, in OpenCV BGR order -> RGB uint8."""
    a = np.asarray(pixels)
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 2:  # gray + alpha
        return np.repeat(a[:, :, :1], 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return np.ascontiguousarray(a[:, :, 2::-1])
    raise ValueError(f"unsupported image shape {a.shape}")


# Bytes of an open TIFF read to find its first directory when Pillow cannot open it (float32 RGB).
TIFF_HEADER_BYTES = 1 << 20
MAX_CHANNELS = 4  # gray, gray + alpha, RGB, RGBA: what the conversion above knows what to do with
# What Pillow calls the formats that are read (whatever the extension says: a BMP named .png is
# read as training would read it). Anything else Pillow recognises (GIF: which frame of an animation
# is the figure?, WebP, ...) is ``unsupported_image`` before decoding, whether OpenCV could or not.
READ_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP")


def _tiff_header(data: bytes) -> Optional[tuple[int, int, int]]:
    """(height, width, samples per pixel) from a TIFF's first directory, for the TIFFs Pillow cannot
    open but OpenCV decodes (float32 RGB); None if the bytes do not hold a readable one."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[:2]))
    if order is None or len(data) < 8:
        return None
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None
    tags = {}
    for k in range(struct.unpack(order + "H", data[ifd:ifd + 2])[0]):
        entry = data[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if kind in (3, 4):  # SHORT, LONG: the types of the three tags read here
            tags[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    if 256 not in tags or 257 not in tags:  # ImageWidth, ImageLength
        return None
    return tags[257], tags[256], tags.get(277, 1)  # SamplesPerPixel


def image_header(data, path: str) -> tuple[int, int, str]:
    """(height, width, format name) from the file header only, without decoding the pixels. ``data``:
    the file's bytes, or the open binary file (Pillow then reads only the header)."""
    import io

    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():  # the size is checked against our own limit (MAX_PIXELS) next
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                width, height = im.size
                fmt = im.format or ""
                samples = len(im.getbands())
    except Image.DecompressionBombError as exc:
        raise BadInput(path, f"too_large: {exc}") from exc
    except Exception as exc:  # PIL raises many types for junk headers
        if not isinstance(data, (bytes, bytearray, memoryview)):  # an open file: its first directories
            source.seek(0)
            data = source.read(TIFF_HEADER_BYTES)
        tiff = _tiff_header(data)
        if tiff is None:
            # PIL names the in-memory buffer ("<_io.BytesIO object at 0x...>"): drop it so reasons are stable.
            detail = f"{type(exc).__name__}: {re.sub(r' <[^<>]* object at 0x[0-9a-f]+>', '', str(exc))}"
            if bytes(data[:8]).startswith(_SIGNATURES):  # an image file whose header is cut short or damaged
                raise BadInput(path, f"corrupt_image: damaged or truncated header ({detail})") from exc
            raise BadInput(path, f"not_an_image: cannot read header ({detail})") from exc
        height, width, samples = tiff
        fmt = "TIFF"
    if fmt not in READ_FORMATS:
        raise BadInput(path, f"unsupported_image: a {fmt or 'unknown'} file (PNG, JPEG, TIFF and BMP are read)")
    if samples > MAX_CHANNELS:
        raise BadInput(path, f"unsupported_image: {samples} samples per pixel (1 to {MAX_CHANNELS} are read)")
    return height, width, fmt


def image_size(data, path: str) -> tuple[int, int]:
    """(height, width) from the file header only (bytes or an open binary file)."""
    return image_header(data, path)[:2]


def check_header(data, path: str, max_pixels: int = MAX_PIXELS, nbytes: Optional[int] = None,
                 ) -> tuple[int, int, str]:
    """(height, width, format) from the header, or ``BadInput``: empty files, junk, images above
    ``max_pixels`` and files longer than their header explains are refused before any decoder sees the
    bytes. ``data``: the encoded bytes, or an open binary file of ``nbytes`` (only its header is read)."""
    nbytes = len(data) if nbytes is None else nbytes
    if nbytes == 0:
        raise BadInput(path, "empty_file: zero bytes")
    height, width, fmt = image_header(data, path)
    check_size(height, width, path, max_pixels, nbytes)
    return height, width, fmt


def without_color_profile(data: bytes) -> bytes:
    """PNG bytes without their ``iCCP`` chunk (other bytes as they are). The profile is never applied
    (pixels are taken as stored), and libpng prints a raw "libpng warning: iCCP: ..." line to the
    terminal for each malformed one, common in exported figures."""
    pos = len(_SIGNATURES[0])
    while data.startswith(_SIGNATURES[0]) and pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), bytes(data[pos + 4:pos + 8])
        if kind == b"iCCP":  # at most one, before the first IDAT
            return data[:pos] + data[pos + 12 + length:]
        if kind == b"IDAT":
            break
        pos += 12 + length  # length, type, data, CRC
    return data


def check_size(height: int, width: int, path: str, max_pixels: int = MAX_PIXELS, file_bytes: int = 0) -> None:
    """``BadInput`` for a header claiming more than ``max_pixels``, or for a file of ``file_bytes`` that
    no encoding of that many pixels explains."""
    if height * width > max_pixels:
        raise BadInput(path, f"too_large: {width}x{height} = {height * width} pixels exceeds the limit of {max_pixels}")
    most = height * width * MAX_BYTES_PER_PIXEL + METADATA_ALLOWANCE
    if file_bytes > most:
        raise BadInput(path, f"corrupt_image: {file_bytes} bytes, more than any encoding of {width}x{height} pixels "
                             f"needs ({most}): damaged, or not the image its header describes")


def check_file(path: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of an image file from its header, having read only the header: ``BadInput``
    naming the file for an unreadable, empty, junk, oversized or overlong file. Every reader runs it
    before reading a file whole (memory stays bounded by ``max_pixels``)."""
    from preprocessing import fileio

    with fileio.input_errors(path):
        fileio.check_regular(path)  # a FIFO named like an image would block the open below
        with fileio.open_file(path, "rb") as f:
            f.seek(0, 2)
            nbytes = f.tell()
            f.seek(0)
            return check_header(f, path, max_pixels, nbytes)[:2]


def decode_rgb8(data: bytes, path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to (H, W, 3) RGB uint8, or raise ``BadInput`` naming the file."""
    check_header(data, path, max_pixels)
    decoded = cv2.imdecode(np.frombuffer(without_color_profile(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise BadInput(path, "corrupt_image: the decoder could not read the pixels (truncated or damaged file)")
    try:
        return to_rgb8(decoded)
    except ValueError as exc:
        raise BadInput(path, f"unsupported_image: {exc}") from exc


def read_rgb8(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file to RGB uint8 (see module docstring for the conversion)."""
    from preprocessing import fileio

    check_file(path, max_pixels)  # the header first: a file is read whole only if its size makes sense
    return decode_rgb8(fileio.read_input(path), path, max_pixels)


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def fits(height: int, width: int, size: int) -> bool:
    """Whether an image is kept at its own size for a model of input ``size`` (0: native sizes).

    Images that fit are stored as they are and enlarged to ``size`` x ``size`` by
    ``preprocessing.model_input.upscale``, on the accelerator in training (after the host's JPEG
    recompression, which so sees the native pixel grid, as a real recompression would) and on the
    host in serving: one function, so both see the same pixels. Larger images are resized here.
    """
    return size == 0 or (height <= size and width <= size)


def resize_image(image, size: int):
    """RGB uint8 (H, W, 3) (or any number of planes: the evidence map) as stored for a model of
    input ``size``: unchanged if it ``fits``, else (size, size, C) by area averaging when shrinking
    both sides (no aliasing), bilinear otherwise."""
    h, w = image.shape[:2]
    if fits(h, w, size):
        return image
    interp = cv2.INTER_AREA if (size <= h and size <= w) else cv2.INTER_LINEAR
    if image.ndim == 2 or image.shape[2] <= 4:
        return cv2.resize(image, (size, size), interpolation=interp)
    # OpenCV resizes at most 4 channels at once, each on its own: resize them in groups.
    return np.concatenate([cv2.resize(image[:, :, k:k + 3], (size, size), interpolation=interp).reshape(size, size, -1)
                           for k in range(0, image.shape[2], 3)], axis=2)


def resize_mask(mask, size: int):
    """(H, W) 0/1 as stored with its image: unchanged if it ``fits``, else (size, size) by nearest
    neighbour, so values stay 0/1 (as the seed)."""
    h, w = mask.shape[:2]
    if fits(h, w, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
