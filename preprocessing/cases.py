"""Finding cases in the competition layout, and the problems found on the way.

    DATA/train_images/{authentic,forged}/<case_id>.<png|jpg|jpeg|tif|tiff>
    DATA/train_masks/<case_id>.npy                (forged cases)
    DATA/supplemental_images/ + supplemental_masks/  (optional; same layout as train,
                                                   or a flat folder of forged images)
    DATA/test_images/<case_id>.<ext>

A case is identified by (label, case_id): the same case_id is often both an
authentic image and its forged counterpart. Anything that splits data uses
``split_key`` (the case_id alone) so that a pair never straddles the split.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

from preprocessing import fileio
from preprocessing.constants import AUTHENTIC, FORGED, LABEL_NAMES
from preprocessing.images import is_image_file


@dataclass(frozen=True)
class Case:
    case_id: str
    label: int  # 0 authentic, 1 forged
    source: str  # "train" or "supplemental"
    image_path: str
    mask_path: Optional[str] = None  # set for forged cases when the mask exists

    @property
    def key(self) -> str:
        return f"{LABEL_NAMES[self.label]}/{self.case_id}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Problem:
    """Something found during discovery; the case may still be usable (see ``fatal``)."""

    case_id: str
    label: Optional[int]
    path: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _image_entries(fs, folder: str) -> list[tuple[str, str]]:
    """(case_id, path) of every file named like an image, sorted by name.

    Dangling symbolic links and link loops are kept: reading them fails with a reason
    (``unreadable``) that the consumer records, instead of the case vanishing silently.
    """
    if not fs.isdir(folder):
        return []
    return [(os.path.splitext(n)[0], fileio.join(folder, n)) for n in fs.files_in(folder) if is_image_file(n)]


def _images_in(fs, folder: str) -> dict[str, str]:
    """case_id -> path for image files in a folder (non-image files are ignored)."""
    out: dict[str, str] = {}
    for cid, path in _image_entries(fs, folder):
        out.setdefault(cid, path)
    return out


def _shadowed_images(fs, folder: str, chosen: dict[str, str]) -> list[tuple[str, str]]:
    """(case_id, path) of image files ignored because another file has the same case_id (a.png + a.jpg)."""
    return [(cid, path) for cid, path in _image_entries(fs, folder) if chosen.get(cid) != path]


def _masks_in(fs, folder: str) -> dict[str, str]:
    if not fs.isdir(folder):
        return {}
    return {os.path.splitext(n)[0]: fileio.join(folder, n) for n in fs.files_in(folder) if n.lower().endswith(".npy")}


def discover_training_cases(root: str, beam: bool = False) -> tuple[list[Case], list[Problem]]:
    """All labelled cases (train + supplemental), sorted by (source, label, case_id).

    Forged images without a mask are returned as cases with ``mask_path=None``
    (the consumer records them as errors) and also listed as problems; masks
    without a forged image are problems only.
    """
    fs = fileio.filesystem(root, beam)
    if not fs.isdir(root):
        raise FileNotFoundError(f"input directory not found: {root}")
    cases: list[Case] = []
    problems: list[Problem] = []
    layouts = [("train", "train_images", "train_masks"),
               ("supplemental", "supplemental_images", "supplemental_masks")]
    found_any = False
    for source, img_dir, mask_dir in layouts:
        img_root, masks = fileio.join(root, img_dir), _masks_in(fs, fileio.join(root, mask_dir))
        if not fs.isdir(img_root):
            continue
        found_any = True
        folders = {AUTHENTIC: fileio.join(img_root, "authentic"), FORGED: fileio.join(img_root, "forged")}
        authentic, forged = _images_in(fs, folders[AUTHENTIC]), _images_in(fs, folders[FORGED])
        if source == "supplemental" and not authentic and not forged:
            folders[FORGED] = img_root
            forged = _images_in(fs, img_root)  # flat supplemental folder: all forged
        for label, chosen in ((AUTHENTIC, authentic), (FORGED, forged)):
            for cid, path in _shadowed_images(fs, folders[label], chosen):
                reason = f"duplicate_image: ignored, {os.path.basename(chosen[cid])} has the same case_id"
                problems.append(Problem(cid, label, path, reason))
        for cid, path in authentic.items():
            cases.append(Case(cid, AUTHENTIC, source, path))
        for cid, path in forged.items():
            mask = masks.get(cid)
            if mask is None:
                problems.append(Problem(cid, FORGED, path, f"missing_mask: no {mask_dir}/{cid}.npy"))
            cases.append(Case(cid, FORGED, source, path, mask))
        for cid in sorted(set(masks) - set(forged)):
            problems.append(Problem(cid, None, masks[cid], "orphan_mask: mask without a forged image"))
    if not found_any:
        raise FileNotFoundError(f"{root} has no train_images/ or supplemental_images/ folder "
                                "(expected the competition layout; see README)")
    cases.sort(key=lambda c: (c.source, c.label, c.case_id))
    return cases, problems


def discover_test_images(root: str, beam: bool = False) -> list[tuple[str, str]]:
    """(case_id, path) of every image in ``root/test_images`` or, if absent, in ``root`` itself."""
    fs = fileio.filesystem(root, beam)
    folder = fileio.join(root, "test_images")
    folder = folder if fs.isdir(folder) else root
    if not fs.isdir(folder):
        raise FileNotFoundError(f"image directory not found: {root}")
    return sorted(_images_in(fs, folder).items())


def split_key(case: Case) -> str:
    """What a train/val split hashes: the case_id alone, so an authentic/forged pair stays together."""
    return case.case_id
