"""Safe loading of ``train_masks/<case_id>.npy``: instances, their union, and what was wrong.

The rules (a label is never guessed: anything ambiguous is a ``bad_mask`` error, not a conversion):
- Shape: ``(N, H, W)`` (one instance per duplicated region: source and each copy separately),
  ``(H, W)``, or either with a trailing singleton channel (``(H, W, 1)``, ``(N, H, W, 1)``).
- Values: bool, integers 0/1, or floats exactly 0.0/1.0. Anything else (0/255, soft masks, NaN)
  is refused, naming the values found.
- Size: a mask of its image's size is used as it is; one that is the image at another scale (same
  aspect ratio, within a pixel of rounding) is resized by nearest neighbour and noted; any other
  shape (a transposed mask, a crop) is refused naming both shapes.
- ``np.load`` runs with ``allow_pickle=False``: a pickled .npy can execute code when loaded, so it
  is refused unless the caller opts in for trusted data.
- A forged image needs a mask with at least one forged pixel (``forged_instances``): the Beam job,
  calibration and the report apply this one rule.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np

from preprocessing.errors import BadInput

_NPY_MAGIC = b"\x93NUMPY"
_NPZ_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2 (what np.save / pickle.dump write)
VALUES_SHOWN = 5  # distinct values quoted in a bad_mask reason


@dataclass
class Mask:
    """Instances ``(N, H, W)`` uint8 0/1 at the image's size, plus what loading had to fix."""

    instances: np.ndarray
    original_shape: tuple = ()
    notes: list = field(default_factory=list)  # e.g. "shape_mismatch: ...", "empty_mask"

    @property
    def union(self) -> np.ndarray:
        if len(self.instances) == 0:
            return np.zeros(self.instances.shape[1:], np.uint8)
        return self.instances.max(axis=0)

    @property
    def resized(self) -> bool:
        return any(n.startswith("shape_mismatch") for n in self.notes)

    @property
    def empty(self) -> bool:
        return "empty_mask" in self.notes


def _values(arr: np.ndarray) -> str:
    found = np.unique(arr[~np.isnan(arr)] if arr.dtype.kind == "f" else arr)
    shown = ", ".join(f"{v:g}" if arr.dtype.kind == "f" else str(v) for v in found[:VALUES_SHOWN])
    more = f" and {len(found) - VALUES_SHOWN} more" if len(found) > VALUES_SHOWN else ""
    nan = " and NaN" if arr.dtype.kind == "f" and np.isnan(arr).any() else ""
    return f"{shown}{more}{nan}"


def _binary(arr: np.ndarray, path: str) -> np.ndarray:
    """uint8 0/1 of a bool array, or of integers / floats that are exactly 0 and 1; else bad_mask."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise BadInput(path, f"bad_mask: unsupported dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):  # NaN fails both comparisons
        raise BadInput(path, f"bad_mask: values must be 0 and 1 (bool, integer or float), found {_values(arr)}; "
                             "convert the mask to 0/1 explicitly (a label is never guessed)")
    return arr.astype(np.uint8)


def parse_mask_array(raw, path: str) -> np.ndarray:
    """Validate a loaded array and return instances ``(N, H, W)`` uint8 0/1 (see the module rules)."""
    arr = np.asarray(raw)
    if arr.dtype == object:
        raise BadInput(path, "bad_mask: object array (pickled); masks must be numeric arrays")
    shape = tuple(arr.shape)
    if arr.ndim in (3, 4) and arr.shape[-1] == 1:
        arr = arr[..., 0]  # (H, W, 1) or (N, H, W, 1): a trailing channel, not a width of 1
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise BadInput(path, f"bad_mask: shape {shape}; expected (N, H, W) with N >= 1 instances or (H, W), "
                             "optionally with a trailing channel of 1")
    return _binary(arr, path)


def same_aspect(mask_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """Whether a mask of ``mask_hw`` is the image at another scale (up to a pixel of rounding)."""
    (mh, mw), (ih, iw) = mask_hw, image_hw
    return abs(mh - round(ih * mw / iw)) <= 1 or abs(mw - round(iw * mh / ih)) <= 1


def load_mask(path: str, image_shape: tuple | None = None, allow_pickle: bool = False,
              data: bytes | None = None) -> Mask:
    """Load a mask file (or its ``data`` bytes), resized to ``image_shape`` (H, W) only when it is
    the image at another scale. Raises ``BadInput`` for a missing, empty, pickled, non-binary or
    mis-shaped file; an all-zero mask is noted as ``empty_mask``."""
    if data is None:
        data = _read(path)
    if len(data) == 0:
        raise BadInput(path, "empty_file: zero bytes")
    head = bytes(data[:6])
    if not (head.startswith(_NPY_MAGIC) or head.startswith(_NPZ_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        # np.load treats any unknown bytes as a pickle; say what it really is.
        raise BadInput(path, f"bad_mask: not a .npy file (starts with {head!r})")
    try:
        raw = np.load(io.BytesIO(data), allow_pickle=allow_pickle)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise BadInput(path, "pickled_mask: refused because a pickled .npy can run code when loaded; "
                                 "pass --allow_pickle_masks only for data you trust") from exc
        raise BadInput(path, f"bad_mask: not a valid .npy file ({exc})") from exc
    except Exception as exc:
        raise BadInput(path, f"bad_mask: not a valid .npy file ({type(exc).__name__}: {exc})") from exc
    if isinstance(raw, np.lib.npyio.NpzFile):
        raw.close()
        raise BadInput(path, "bad_mask: .npz archive; expected a single .npy array")
    if allow_pickle and not (isinstance(raw, np.ndarray) and raw.dtype != object):
        raw = _stack_trusted_object(raw, path)  # a trusted pickle may hold any Python object
    inst = parse_mask_array(raw, path)
    original_shape = inst.shape[1:]
    notes = []
    if image_shape is not None and tuple(image_shape[:2]) != original_shape:
        h, w = image_shape[:2]
        if not same_aspect(original_shape, (h, w)):
            raise BadInput(path, f"bad_mask: mask {original_shape[0]}x{original_shape[1]} (HxW) does not match "
                                 f"image {h}x{w} and is not the image at another scale (transposed or cropped?)")
        inst = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in inst])
        notes.append(f"shape_mismatch: mask {original_shape[0]}x{original_shape[1]} resized to image {h}x{w}")
    inst = inst[inst.reshape(len(inst), -1).any(axis=1)]
    if len(inst) == 0:
        notes.append("empty_mask")
    return Mask(instances=inst, original_shape=original_shape, notes=notes)


def _read(path: str) -> bytes:
    from preprocessing import fileio

    if not fileio.exists(path):
        raise BadInput(path, "missing_mask: file not found")
    return fileio.read_input(path)


def forged_instances(image_path: str, mask_path: str | None, image_hw: tuple[int, int], allow_pickle: bool = False,
                     data: bytes | None = None) -> Mask:
    """The mask of a forged image, by the one rule every consumer applies: it must exist, load
    (``load_mask``) and have a forged pixel; otherwise ``BadInput`` (``missing_mask`` /
    ``empty_mask`` / the loading reason), never a silent "authentic"."""
    if not mask_path:
        raise BadInput(image_path, "missing_mask: forged image without a <case_id>.npy mask file")
    mask = load_mask(mask_path, image_hw, allow_pickle, data=data)
    if mask.empty:
        raise BadInput(mask_path, "empty_mask: forged image whose mask has no forged pixel")
    return mask


def _stack_trusted_object(raw, path: str) -> np.ndarray:
    """Trusted pickled masks (lists of arrays, as some tools write) -> one (N, H, W) array."""
    if not isinstance(raw, np.ndarray):
        try:  # nested lists of numbers, or a list of same-shape planes
            arr = np.asarray(raw)
            if arr.dtype != object:
                return arr
        except (ValueError, TypeError):
            pass
    if isinstance(raw, (list, tuple)):
        objects = list(raw)
    elif isinstance(raw, np.ndarray):
        objects = list(raw.reshape(-1))
    else:
        objects = [raw]
    try:
        items = [np.asarray(x) for x in objects]
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise BadInput(path, f"bad_mask: pickled items are not arrays ({exc})") from exc
    planes = []
    for k, it in enumerate(items):
        if it.dtype == object:
            raise BadInput(path, f"bad_mask: pickled item {k} is a {type(objects[k]).__name__}, not a numeric array")
        if it.ndim == 2:
            planes.append(it)
        elif it.ndim == 3:
            planes.extend(list(it))
        else:
            raise BadInput(path, f"bad_mask: pickled item {k} has shape {it.shape}; expected (H, W) or (N, H, W)")
    if not planes or len({p.shape for p in planes}) != 1:
        raise BadInput(path, "bad_mask: pickled items are empty or of different shapes")
    return np.stack(planes)
