"""Safe loading of ``train_masks/<case_id>.npy``: instances, their union, and what was wrong.

Masks are ``(N, H, W)`` (one instance per duplicated region: source and each
copy separately) or ``(H, W)``; uint8, bool or any integer type, nonzero = forged.
``np.load`` runs with ``allow_pickle=False``: a pickled .npy can execute code
when loaded, so it is refused unless the caller opts in for trusted data.
(The seed squeezed ``(N, H, W)`` and took ``[:, :, 0]``, which keeps one
column of every instance and empties the mask; here the axis order is explicit.)
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


def parse_mask_array(raw, path: str) -> np.ndarray:
    """Validate a loaded array and return instances ``(N, H, W)`` uint8 0/1 (empty instances dropped)."""
    arr = np.asarray(raw)
    if arr.dtype == object:
        raise BadInput(path, "bad_mask: object array (pickled); masks must be numeric arrays")
    if not (arr.dtype == bool or arr.dtype.kind in "iuf"):
        raise BadInput(path, f"bad_mask: unsupported dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise BadInput(path, f"bad_mask: shape {tuple(np.asarray(raw).shape)}; expected (N, H, W) or (H, W)")
    inst = (arr != 0).astype(np.uint8)
    return inst


def load_mask(path: str, image_shape: tuple | None = None, allow_pickle: bool = False,
              data: bytes | None = None) -> Mask:
    """Load a mask file (or its ``data`` bytes), resize it to ``image_shape`` (H, W) if needed.

    Raises ``BadInput`` for a missing, empty, pickled or mis-typed file. A shape
    differing from the image is resized (nearest) and noted; an all-zero mask
    is noted as ``empty_mask``.
    """
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as exc:
            raise BadInput(path, "missing_mask: file not found") from exc
        except OSError as exc:
            raise BadInput(path, f"unreadable: {exc.strerror}") from exc
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
        inst = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in inst]) if len(inst) \
            else np.zeros((0, h, w), np.uint8)
        notes.append(f"shape_mismatch: mask {original_shape[0]}x{original_shape[1]} resized to image {h}x{w}")
    inst = inst[inst.reshape(len(inst), -1).any(axis=1)] if len(inst) else inst
    if len(inst) == 0:
        notes.append("empty_mask")
    return Mask(instances=inst, original_shape=original_shape, notes=notes)


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
    for it in items:
        if it.ndim == 2:
            planes.append(it)
        elif it.ndim == 3:
            planes.extend(list(it))
        else:
            raise BadInput(path, f"bad_mask: pickled item of shape {it.shape}")
    if not planes or len({p.shape for p in planes}) != 1:
        raise BadInput(path, "bad_mask: pickled items are empty or of different shapes")
    return np.stack(planes)
