"""Screen a paper: images, folders and PDFs in, a review report out, no model and no ground truth.

    python -m serving.screen PATH... --output DIR [--render_pages DPI] [--workers N] [--strict] [--overwrite]

Each PDF or folder is a document (``serving.documents``). Within every image the matcher runs as
``serving.score --detector matcher`` runs it (``serving.matcher.verdict``: same decision, same
defaults). Across the images of a document, the panels of every image are indexed by their
keypoints and the few candidate pairs are verified by ``preprocessing.matching.across.match_panels``
(the matcher's own verification). Identical repeats of one element in ``REPEAT_MIN_IMAGES`` or more
images of a document (a logo, a banner, a template) are listed as recurring elements, not findings.

Writes DIR/index.html (with DIR/pictures/), DIR/findings.jsonl and DIR/errors.jsonl, built in a
staging folder and put in place when complete (``preprocessing.outputs``). Never imports
TensorFlow or Apache Beam. Exit status: 0, or 1 with ``--strict`` when any file was skipped.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from absl import flags

from preprocessing import cli, outputs
from preprocessing.errors import BadInput, UsageError
from preprocessing.matching import DecisionParams, MatcherConfig, across, detect
from preprocessing.matching.across import PanelKeys, PanelMatch, candidate_pairs, panel_keys
from preprocessing.matching.describe import transform_words
from serving.documents import Document, ImageRef, documents, error, load
from serving.matcher import Analysed, verdict

FLAGS = flags.FLAGS

OUTPUT_FILES = ("index.html", "findings.jsonl", "errors.jsonl")
PICTURES = "pictures"
# An identical element (see PanelMatch.identical) found in this many images of one document is a
# layout element (logo, journal banner, template), not a reuse of data.
REPEAT_MIN_IMAGES = 3
# Per worker, while verifying candidates: decoded images (a few large scans at most) and prepared
# panels (a 640 px working image, its mask and keypoints: about 2 MB each) kept for the next pair.
CACHED_IMAGES = 2
CACHED_PANELS = 8
# Candidate pairs handed to a worker at a time: consecutive pairs share panels (see verify_candidate).
VERIFY_CHUNK = 4


def owned(rel: str) -> bool:
    """The files this command writes in DIR (``--overwrite`` replaces only these)."""
    return rel in OUTPUT_FILES or rel.startswith(PICTURES + "/")


def define_flags() -> None:
    flags.DEFINE_string("output", None, "Folder for index.html, findings.jsonl, errors.jsonl and pictures/.",
                        required=True)
    flags.DEFINE_integer("render_pages", 0, "Also screen each PDF page rendered at this many dots per inch "
                         "(0: embedded images only).", lower_bound=0)
    cli.define_workers()
    flags.DEFINE_bool("strict", False, "Exit non-zero if any file, page or image was skipped.")
    cli.define_overwrite()


# ----------------------------------------------------------------------------- one image


@dataclass
class ImageResult:
    """One image through the matcher: its within-image findings and its panels' keys."""

    ref: ImageRef
    shape: Optional[tuple] = None
    within: list = field(default_factory=list)  # finding dicts
    keys: list = field(default_factory=list)  # PanelKeys
    error: Optional[dict] = None


def where(ref: ImageRef, box) -> dict:
    """A region's place, as findings.jsonl records it."""
    return {"source": ref.source, "page": ref.page, "image": ref.index, "label": ref.label,
            "box": [int(v) for v in box],
            "position_on_page": list(ref.position) if ref.position else None,
            "rendered_page": bool(ref.render_dpi)}


def words(transform) -> str:
    return ", ".join(transform_words(transform)) or "same size and orientation"


def finding(kind: str, ref_a: ImageRef, box_a, ref_b: ImageRef, box_b, transform, score: float,
            correlation: float, inliers: int, exact_blocks: int = 0) -> dict:
    return {"kind": kind, "a": where(ref_a, box_a), "b": where(ref_b, box_b), "transform": words(transform),
            "matrix": [list(r) for r in transform.matrix], "score": round(float(score), 4),
            "correlation": round(float(correlation), 4), "inliers": int(inliers), "exact_blocks": int(exact_blocks)}


def screen_image(job) -> ImageResult:
    """Decode one image, run the matcher's detection and decision on it, and key its panels."""
    from serving.screen_report import finding_pictures

    ref, config, params = job
    try:
        rgb = load(ref)
    except BadInput as exc:
        return ImageResult(ref, error=error(ref.source, exc.reason, ref.page))
    det = detect(rgb, config)
    result = ImageResult(ref, shape=tuple(rgb.shape[:2]))
    for p in verdict(Analysed(ref.label, ref.path, detection=det), params).pairs:
        f = finding("within", ref, p.source.box, ref, p.copy.box, p.transform, p.strength, p.correlation,
                    p.inliers, p.exact_blocks)
        f["pictures"] = finding_pictures(rgb, p.source.box, rgb, p.copy.box, p.transform.matrix)
        result.within.append(f)
    result.keys = panel_keys(rgb, det.panels, ref.index, config)
    return result


# ----------------------------------------------------------------------------- across images


def comparable(a: ImageRef, b: ImageRef) -> bool:
    """Whether two images of a document are compared: embedded images with embedded images, rendered
    pages with rendered pages (a page's render shows its own embedded images, and a reuse found
    between embedded images would otherwise be reported again for every render holding them)."""
    return a.index != b.index and bool(a.render_dpi) == bool(b.render_dpi)


def offset(m: PanelMatch, box_a, box_b) -> tuple:
    """A PanelMatch's boxes and map in the two images' pixels (panels at ``box_a``, ``box_b``)."""
    import numpy as np

    from preprocessing.matching.results import Transform

    (ax, ay, _, _), (bx, by, _, _) = box_a, box_b
    shift = np.array([[1.0, 0, bx], [0, 1.0, by], [0, 0, 1]]) @ np.vstack([np.asarray(m.transform.matrix), [0, 0, 1]])
    matrix = (shift @ np.array([[1.0, 0, -ax], [0, 1.0, -ay], [0, 0, 1]]))[:2]
    a = (m.box_a[0] + ax, m.box_a[1] + ay, m.box_a[2], m.box_a[3])
    b = (m.box_b[0] + bx, m.box_b[1] + by, m.box_b[2], m.box_b[3])
    return a, b, Transform.from_matrix(matrix)


@functools.lru_cache(maxsize=CACHED_IMAGES)
def _cached_image(ref: ImageRef):
    return load(ref)


@functools.lru_cache(maxsize=CACHED_PANELS)
def _cached_panel(ref: ImageRef, box: tuple, config: MatcherConfig):
    x, y, w, h = box
    return across.prepare(_cached_image(ref)[y:y + h, x:x + w], config, across.VERIFY_MAX_FEATURES)


def verify_candidate(job) -> Optional[dict]:
    """Verify one candidate panel pair; its finding (with pictures and an ``identical`` flag) or None.
    Candidates come sorted by their first panel, so each worker's small caches (``CACHED_IMAGES``
    decoded images, ``CACHED_PANELS`` prepared panels) spare most decoding and preparing."""
    from serving.screen_report import finding_pictures

    ref_a, key_a, ref_b, key_b, config, params = job
    try:
        rgb_a, rgb_b = _cached_image(ref_a), _cached_image(ref_b)
    except BadInput:
        return None  # the image's own error row was written by screen_image
    m = across.match_prepared(_cached_panel(ref_a, key_a.box, config), _cached_panel(ref_b, key_b.box, config), config,
                       params)
    if m is None:
        return None
    box_a, box_b, transform = offset(m, key_a.box, key_b.box)
    f = finding("across", ref_a, box_a, ref_b, box_b, transform, m.strength, m.correlation, m.inliers)
    f["identical"] = m.identical
    f["panels"] = [[key_a.image, key_a.panel], [key_b.image, key_b.panel]]
    f["pictures"] = finding_pictures(rgb_a, box_a, rgb_b, box_b, transform.matrix)
    return f


def recurring(found: list[dict]) -> set:
    """Indices of ``found`` (across findings) that are identical repeats of an element present in
    ``REPEAT_MIN_IMAGES`` or more images (see the module docstring)."""
    images: dict = {}
    for f in found:
        if f["identical"]:
            for panel in map(tuple, f["panels"]):
                images.setdefault(panel, set()).update(p[0] for p in f["panels"])
    layout = {p for p, imgs in images.items() if len(imgs) >= REPEAT_MIN_IMAGES}
    return {k for k, f in enumerate(found) if f["identical"] and any(tuple(p) in layout for p in f["panels"])}


# ----------------------------------------------------------------------------- a document


@dataclass
class Screened:
    """One document's results."""

    name: str
    images: list = field(default_factory=list)  # (ImageRef, shape) of the readable images
    findings: list = field(default_factory=list)
    recurring: list = field(default_factory=list)  # identical layout elements (not findings)
    errors: list = field(default_factory=list)
    candidates: int = 0


def _map(pool, fn, jobs, chunksize: int = 1):
    return pool.map(fn, jobs, chunksize=chunksize) if pool is not None else map(fn, jobs)


def screen_document(doc: Document, pool, config: MatcherConfig = MatcherConfig(),
                    params: DecisionParams = DecisionParams(), progress: bool = True) -> Screened:
    """Within every image, then across the images of the document (see the module docstring)."""
    from tqdm import tqdm

    out = Screened(doc.name, errors=list(doc.errors))
    bar = tqdm(total=len(doc.images), desc=doc.name[-40:], unit="img", disable=not progress, file=sys.stderr)
    keys: list[PanelKeys] = []
    for r in _map(pool, screen_image, [(ref, config, params) for ref in doc.images]):
        bar.update(1)
        if r.error:
            out.errors.append(r.error)
            continue
        out.images.append((r.ref, r.shape))
        out.findings += r.within
        keys += r.keys
    refs = {ref.index: ref for ref, _ in out.images}
    pairs = candidate_pairs(keys, lambda a, b: comparable(refs[a], refs[b]))
    out.candidates = len(pairs)
    bar.total += len(pairs)
    bar.refresh()
    jobs = [(refs[keys[i].image], keys[i], refs[keys[j].image], keys[j], config, params) for i, j, _ in sorted(pairs)]
    matches = []
    for f in _map(pool, verify_candidate, jobs, VERIFY_CHUNK):
        bar.update(1)
        if f is not None:
            matches.append(f)
    bar.close()
    layout = recurring(matches)
    out.recurring = [f for k, f in enumerate(matches) if k in layout]
    out.findings += [f for k, f in enumerate(matches) if k not in layout]
    out.findings.sort(key=lambda f: -f["score"])
    return out


# ----------------------------------------------------------------------------- the run


def check_paths(paths: list[str], output: str, overwrite: bool) -> str:
    if not paths:
        raise UsageError("give at least one PATH (an image, a folder or a PDF) to screen")
    protected = {f"input folder {p}": p for p in paths if os.path.isdir(p)}
    return outputs.check_dir(output, overwrite=overwrite, owned=owned, protected=protected)


def screen(paths: list[str], output: str, render_dpi: int = 0, workers: int = 1, overwrite: bool = False,
           progress: bool = True) -> dict:
    """Screen ``paths`` into ``output``; returns the summary (see ``summary``)."""
    from serving.screen_report import write_report

    output = check_paths(paths, output, overwrite)
    docs = documents(paths, render_dpi)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        screened = [screen_document(d, pool, progress=progress) for d in docs]
    finally:
        if pool is not None:
            pool.shutdown()
    result = summary(screened)
    with outputs.staged_local_dir(output, owned) as staging:
        write_report(staging, screened, result)
    result["output"] = output
    return result


def summary(screened: list[Screened]) -> dict:
    findings = [f for s in screened for f in s.findings]
    return {"documents": len(screened), "images": sum(len(s.images) for s in screened),
            "findings": len(findings), "within": sum(f["kind"] == "within" for f in findings),
            "across": sum(f["kind"] == "across" for f in findings),
            "recurring_elements": sum(len(s.recurring) for s in screened),
            "unreadable": sum(len(s.errors) for s in screened)}


def main(argv) -> int:
    result = screen(list(argv[1:]), FLAGS.output, FLAGS.render_pages, FLAGS.workers, FLAGS.overwrite)
    print(json.dumps(result))
    print(f"report: {os.path.join(result['output'], 'index.html')}")
    if result["unreadable"]:
        print(f"{result['unreadable']} files, pages or images could not be read: "
              f"{os.path.join(result['output'], 'errors.jsonl')}", file=sys.stderr)
    return 1 if FLAGS.strict and result["unreadable"] else 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
