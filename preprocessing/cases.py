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

    def record(self) -> dict:
        """The error record of scoring and the Beam jobs: {"case_id", "path", "reason"}."""
        return {"case_id": self.case_id, "path": self.path, "reason": self.reason}


def printable(name: str) -> str:
    """A file name as text that can be written anywhere: bytes that are not UTF-8 (which Python
    keeps as lone surrogates) shown as escapes (``b\\udcffd.png``)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def image_files(fs, folder: str, label: Optional[int] = None) -> tuple[dict[str, str], list[Problem]]:
    """case_id -> path of the image files in ``folder``, and the files that cannot be a case, as
    problems: every file of a case id that two files share (``a.png`` + ``a.jpg``: which one is
    meant is not guessed, ``duplicate_image``) and names that are not UTF-8 (``bad_file_name``:
    no CSV or JSON line can hold them). Every discovery (training, scoring, screening, the
    report) lists folders through this one function.

    Non-image names are ignored. Dangling links, link loops, FIFOs are kept: reading them fails
    with a reason the consumer records, instead of the case vanishing silently.
    """
    if not fs.isdir(folder):
        return {}, []
    by_id: dict[str, list[str]] = {}
    problems = []
    for name in fs.files_in(folder):
        if not is_image_file(name):
            continue
        cid, path = os.path.splitext(name)[0], fileio.join(folder, name)
        if printable(name) != name:
            problems.append(Problem(printable(cid), label, printable(path),
                                    f"bad_file_name: {os.fsencode(name)!r} is not UTF-8; rename the file"))
            continue
        by_id.setdefault(cid, []).append(path)
    found = {}
    for cid, paths in by_id.items():
        if len(paths) == 1:
            found[cid] = paths[0]
            continue
        names = ", ".join(os.path.basename(p) for p in paths)
        problems += [Problem(cid, label, p, f"duplicate_image: {names} share the case id {cid!r}; neither is "
                                            "used (rename one)") for p in paths]
    return found, problems


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
        (authentic, bad_a), (forged, bad_f) = (image_files(fs, folders[label], label) for label in (AUTHENTIC, FORGED))
        if source == "supplemental" and not authentic and not forged and not bad_a and not bad_f:
            folders[FORGED] = img_root
            forged, bad_f = image_files(fs, img_root, FORGED)  # flat supplemental folder: all forged
        problems += bad_a + bad_f
        for cid, path in authentic.items():
            cases.append(Case(cid, AUTHENTIC, source, path))
        for cid, path in forged.items():
            mask = masks.get(cid)
            if mask is None:
                problems.append(Problem(cid, FORGED, path, f"missing_mask: no {mask_dir}/{cid}.npy"))
            cases.append(Case(cid, FORGED, source, path, mask))
        refused = {p.case_id for p in bad_f}  # their masks are not orphans: the images were refused
        for cid in sorted(set(masks) - set(forged) - refused):
            problems.append(Problem(cid, None, masks[cid], "orphan_mask: mask without a forged image"))
    if not found_any:
        raise FileNotFoundError(f"{root} has no train_images/ or supplemental_images/ folder "
                                "(expected the competition layout; see README)")
    cases.sort(key=lambda c: (c.source, c.label, c.case_id))
    return cases, problems


def discover_test_images(root: str, beam: bool = False) -> tuple[list[tuple[str, str]], list[Problem]]:
    """(case_id, path) of every image in ``root/test_images`` or, if absent, in ``root`` itself,
    and the files that cannot be scored (``image_files``): callers record those as errors."""
    fs = fileio.filesystem(root, beam)
    folder = fileio.join(root, "test_images")
    folder = folder if fs.isdir(folder) else root
    if not fs.isdir(folder):
        raise FileNotFoundError(f"image directory not found: {root}")
    found, problems = image_files(fs, folder)
    return sorted(found.items()), problems


def split_key(case: Case) -> str:
    """What a train/val split hashes: the case_id alone, so an authentic/forged pair stays together."""
    return case.case_id
