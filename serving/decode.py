"""Image decoding with TF ops for the scoring pipelines, pixel-identical to preprocessing.images.

The conversion is preprocessing.images' (16-bit -> round(v / 257), gray -> 3
channels, alpha dropped); only the decoder differs, so tf.data can decode in
parallel without the GIL:
- PNG: ``tf.io.decode_png`` at the file's bit depth (8 or 16; 1-4 bit files decode to 8);
- JPEG: ``tf.io.decode_jpeg`` with the ISLOW DCT (what OpenCV uses; TF's default DCT differs);
- TIFF: tensorflow-io's ``decode_tiff`` (libtiff RGBA) when it is exact (8-bit,
  or 16-bit colour); 16-bit grayscale and float TIFFs, where libtiff truncates
  instead of rounding, go through preprocessing.images.decode_rgb8 (OpenCV), as
  do CMYK JPEGs. Files TF cannot decode at all (e.g. 1-bit TIFF) fail here and
  the scoring pipelines retry them with preprocessing.images.
The format is chosen from the file's magic bytes, not its extension; anything
else (a BMP named .png, ...) also takes the preprocessing.images retry, so
scoring reads whatever training would have read.
Files are checked (empty, header, size limit) in Python before any decoding, by
``preprocessing.images.check_file`` (having read only the header), so decompression bombs never
reach a decoder.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from preprocessing.images import decode_rgb8, resize_image
from preprocessing.model_input import upscale_one

_PNG_MAGIC = b"\x89PNG"
_JPEG_MAGIC = b"\xff\xd8"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")  # little and big endian
_PNG_BIT_DEPTH = 24  # offset of the IHDR chunk's bit depth (signature 8, chunk length 4, type 4, size 8)
_TFIO_UINT8, _TFIO_UINT16 = 4, 17  # tensorflow-io's dtype codes in decode_tiff_info


def _to_rgb8(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 or uint16 (H, W, C) -> RGB uint8 (H, W, 3): the preprocessing.images conversion in TF ops.
    Alpha is dropped before the 16-bit rounding, and that rounding stays in 16 bits, so a 90 MP image
    holds no int32 copy (4 bytes a sample: 1 GB)."""
    channels = tf.shape(pixels)[-1]
    pixels = tf.cond(channels >= 3, lambda: pixels[:, :, :3], lambda: pixels[:, :, :1])
    if pixels.dtype == tf.uint16:
        # round(v / 257) = (v + 128) // 257 = q + (r >= 129) with v = 257 q + r, in uint16 without overflow
        q = pixels // 257
        pixels = tf.cast(q, tf.uint8) + tf.cast(pixels - q * 257 >= 129, tf.uint8)
    rgb = tf.cond(tf.shape(pixels)[-1] == 3, lambda: pixels, lambda: tf.repeat(pixels, 3, axis=2))
    return tf.ensure_shape(rgb, [None, None, 3])


def _decode_with_opencv(data: tf.Tensor) -> tf.Tensor:
    """The reference decoder (preprocessing.images) for the few files TF's decoders would get wrong."""
    def decode(raw):  # a 0-d object array holding the bytes
        return decode_rgb8(raw.item() if isinstance(raw, np.ndarray) else raw, "<image>")

    out = tf.numpy_function(decode, [data], tf.uint8, stateful=False)
    return tf.ensure_shape(out, [None, None, 3])


def _decode_tiff(data: tf.Tensor) -> tf.Tensor:
    import tensorflow_io as tfio  # imported here: its ops are only needed for TIFF

    shape, dtype = tfio.experimental.image.decode_tiff_info(data)
    channels, code = shape[0, 2], dtype[0]
    exact = tf.logical_or(tf.equal(code, _TFIO_UINT8),
                          tf.logical_and(tf.equal(code, _TFIO_UINT16), channels >= 3))

    def with_tfio():
        return tf.ensure_shape(tfio.experimental.image.decode_tiff(data)[:, :, :3], [None, None, 3])

    return tf.cond(exact, with_tfio, lambda: _decode_with_opencv(data))


def decode_rgb8_tf(data: tf.Tensor) -> tf.Tensor:
    """Encoded PNG/JPEG/TIFF bytes (scalar string) -> RGB uint8 (H, W, 3), chosen by magic bytes.

    Anything else (a BMP named .png) goes to the reference decoder directly: libtiff would print
    "Not a TIFF file" to the terminal before failing.
    """
    is_png = tf.equal(tf.strings.substr(data, 0, 4), _PNG_MAGIC)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), _JPEG_MAGIC)
    is_tiff = tf.reduce_any(tf.equal(tf.strings.substr(data, 0, 4), _TIFF_MAGIC))

    def png():  # 8-bit files decoded as 8 bits (half the memory of 16), the bit depth read from the header
        deep = tf.equal(tf.strings.substr(data, _PNG_BIT_DEPTH, 1), b"\x10")
        return tf.cond(deep, lambda: _to_rgb8(tf.io.decode_png(data, channels=0, dtype=tf.uint16)),
                       lambda: _to_rgb8(tf.io.decode_png(data, channels=0, dtype=tf.uint8)))

    def jpeg():
        # INTEGER_ACCURATE (libjpeg's ISLOW) + fancy upsampling is what OpenCV uses; TF's default differs.
        # CMYK JPEGs (4 components) are converted differently by the two libraries: OpenCV decides.
        return tf.cond(tf.equal(tf.io.extract_jpeg_shape(data)[2], 4),
                       lambda: _decode_with_opencv(data),
                       lambda: _to_rgb8(tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE")))

    return tf.case([(is_png, png), (is_jpeg, jpeg), (is_tiff, lambda: _decode_tiff(data))],
                   default=lambda: _decode_with_opencv(data), exclusive=False)


def resize_to_model(image: tf.Tensor, size: int) -> tf.Tensor:
    """RGB uint8 (H, W, 3) (or the evidence map's planes) -> (size, size, C) uint8 exactly as
    training saw it.

    An image that fits in size x size is enlarged by preprocessing.model_input,
    the function the training step runs on the accelerator. A larger one goes
    through preprocessing.images.resize_image (OpenCV area / bilinear), as the
    Beam job resized it, rather than ``tf.image.resize``, whose area kernel
    differs from OpenCV's. OpenCV releases the GIL while resizing, so tf.data's
    parallel map still scales.
    """
    shape = tf.shape(image)
    small = tf.logical_and(shape[0] <= size, shape[1] <= size)

    def with_opencv():
        return tf.numpy_function(lambda a: np.ascontiguousarray(resize_image(a, size)), [image], tf.uint8,
                                 stateful=False)

    out = tf.cond(small, lambda: upscale_one(image, size), with_opencv)
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


def load_for_model(path: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """File path -> (model-ready uint8 (size, size, 3) image, the decoded image's (H, W)): what every
    scoring pipeline (serving.network's tf.data, serving.beam_pipeline's workers) reads a file with."""
    image = decode_rgb8_tf(tf.io.read_file(path))
    return resize_to_model(image, size), tf.shape(image)[:2]


def decode_file_eager(path: str, size: int) -> np.ndarray:
    """The same decode + resize, eagerly for one file."""
    return load_for_model(tf.constant(path), size)[0].numpy()
