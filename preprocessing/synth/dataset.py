"""A whole synthetic dataset: which cases exist, each case drawn from its own seed, post-processing,
and the files of the competition layout (written to a staging folder, moved into place at the end)."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

import cv2
import numpy as np

from preprocessing import outputs, rle
from preprocessing.errors import UsageError
from preprocessing.hyperparams import HELP, option
from preprocessing.synth import hard
from preprocessing.synth.base import MIN_REGION_STD, available_science_images, make_base
from preprocessing.synth.copymove import forge

META_FILE = "synth_meta.json"
SOLUTION_FILE = "test_solution.csv"
VERSION = 1
PAIRED_FRACTION = 0.6  # forged training cases whose authentic twin is also written
JPEG_PROB, NOISE_PROB = 0.25, 0.15
GRAY_16BIT_PROB = 0.1  # of grayscale images, saved as 16-bit PNG (value * 257, exact under to_rgb8)
BASE_ATTEMPTS = 5  # base images drawn for a forged case before accepting flat regions
STYLES = ("mixed", "figures", "photos", "hard")
FIGURE_FRACTION = 0.5  # of ``mixed`` cases drawn as compound figures


@dataclass(frozen=True)
class SynthConfig:
    """What ``generate`` makes (``python -m preprocessing.synth``'s flags are derived from it)."""

    num_train: int = option(200, "Training images (about half forged).", lower=0)
    num_test: int = option(50, "Test images (about half forged), scored by test_solution.csv.", lower=0)
    seed: int = option(0, HELP["seed"])
    min_size: int = option(100, "Smallest image side in pixels.", lower=16)
    max_size: int = option(1500, "Largest image side in pixels (more than --min_size: images are never square).",
                           lower=17)
    style: str = option("mixed", "photos: single images; figures: compound scientific figures (panels, labels, "
                        "scale bars, blots, charts); mixed: half of each; hard: smooth, small, lane, rotated and "
                        "rescaled copies after JPEG/noise/blur, and authentic look-alikes (synth.hard).",
                        choices=STYLES)
    sources: str = option("seen", "hard style only: 'unseen' crops photographs from scikit-image samples the other "
                          "styles never use (a held-out set of unfamiliar sources).", choices=("seen", "unseen"))


def draw_post(rng: np.random.Generator) -> dict:
    """Re-save through JPEG and/or add noise (applied after the forgery, to authentic images too)."""
    post = {}
    if rng.random() < JPEG_PROB:
        post["jpeg_quality"] = int(rng.integers(75, 96))
    if rng.random() < NOISE_PROB:
        post["noise_sigma"] = float(np.round(rng.uniform(1.0, 4.0), 2))
        post["noise_seed"] = int(rng.integers(2**31))
    return post


def post_process(image: np.ndarray, post: dict) -> np.ndarray:
    """Blur, noise, then JPEG round trip (whichever ``post`` names); the same ``post`` gives the
    same change on a before/after pair."""
    out = image
    if "blur_sigma" in post:
        out = cv2.GaussianBlur(out, (0, 0), post["blur_sigma"])
    if "noise_sigma" in post:
        noise = np.random.default_rng(post["noise_seed"]).standard_normal(out.shape, dtype=np.float32)
        noise *= np.float32(post["noise_sigma"])
        out = np.clip(np.rint(out + noise), 0, 255).astype(np.uint8)
    if "jpeg_quality" in post:
        bgr = out[:, :, ::-1] if out.ndim == 3 else out
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, post["jpeg_quality"]])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out = dec[:, :, ::-1] if dec.ndim == 3 else dec
    return np.ascontiguousarray(out)


def write_png(path: str, image: np.ndarray, bit16: bool = False) -> None:
    """RGB or grayscale uint8 -> PNG (grayscale stays single-channel; ``bit16`` stores v * 257)."""
    arr = image
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    elif bit16:
        arr = arr.astype(np.uint16) * 257
    if not cv2.imwrite(path, np.ascontiguousarray(arr)):
        raise OSError(f"could not write {path}")


@dataclass
class SynthCase:
    split: str  # "train" or "test"
    case_id: str
    forged: bool
    paired: bool = False  # forged train case whose authentic twin is written too
    kind: str = ""
    height: int = 0
    width: int = 0
    channels: int = 0
    bit16: bool = False
    post: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    figure: Optional[dict] = None  # a compound figure's panels and decorations

    def to_dict(self) -> dict:
        """As stored in synth_meta.json (photo cases have no ``figure`` key, as before figures)."""
        d = asdict(self)
        if d["figure"] is None:
            del d["figure"]
        return d


def _plan(rng: np.random.Generator, num_train: int, num_test: int) -> list[SynthCase]:
    """Which cases exist: half of each split forged, ~60% of forged train cases paired, unique ids."""
    n_forged = num_train // 2
    n_auth = num_train - n_forged
    n_pairs = min(int(round(PAIRED_FRACTION * n_forged)), n_auth)
    n_cases = n_forged + n_auth - n_pairs + num_test
    ids = [str(v) for v in rng.choice(np.arange(10_000, 10_000 + max(100_000, 20 * n_cases)), n_cases, replace=False)]
    plan = []
    for i in range(n_forged):
        plan.append(SynthCase("train", ids.pop(), forged=True, paired=i < n_pairs))
    for _ in range(n_auth - n_pairs):
        plan.append(SynthCase("train", ids.pop(), forged=False))
    test_forged = rng.permutation(num_test) < num_test // 2
    for f in test_forged:
        plan.append(SynthCase("test", ids.pop(), forged=bool(f)))
    return plan


def _photo_case(case: SynthCase, rng: np.random.Generator, min_size: int, max_size: int):
    """(base, image, instances or None, op dicts) for a single-image case."""
    for attempt in range(BASE_ATTEMPTS):
        base, case.kind = make_base(rng, min_size, max_size)
        if not case.forged:
            return base, base, None, []
        # A base too flat for a textured copy is re-drawn; the last attempt takes any texture.
        image, instances, ops = forge(rng, base, MIN_REGION_STD if attempt < BASE_ATTEMPTS - 1 else 0.0)
        if ops:
            return base, image, instances, [op.to_dict() for op in ops]
    raise RuntimeError(f"case {case.case_id}: no copy-move fits a {base.shape} image")


def _figure_case(case: SynthCase, rng: np.random.Generator, min_size: int, max_size: int):
    """(base, image, instances or None, op dicts) for a compound-figure case."""
    from preprocessing.synth import figures

    for attempt in range(BASE_ATTEMPTS):
        fig = figures.make_figure(rng, min_size, max_size)
        case.kind, case.figure = "figure", fig.meta()
        if not case.forged:
            return fig.image, fig.image, None, []
        image, instances, ops = figures.forge(rng, fig, MIN_REGION_STD if attempt < BASE_ATTEMPTS - 1 else 0.0)
        if ops:
            return fig.image, image, instances, ops
    raise RuntimeError(f"case {case.case_id}: no copy-move fits a {fig.image.shape} figure")


def figures_fit(max_size: int) -> bool:
    """Whether pages of at most ``max_size`` px can hold a figure (else ``mixed`` makes photos only)."""
    from preprocessing.synth.figure_layout import FIGURE_MIN_SIDE

    return max_size >= FIGURE_MIN_SIDE


def _make_case(case: SynthCase, rng: np.random.Generator, min_size: int, max_size: int, style: str = "photos",
               sources: str = "seen"):
    """(images to write as {relative path: array}, mask instances or None) for one planned case."""
    if style == "mixed":
        style = "figures" if rng.random() < FIGURE_FRACTION and figures_fit(max_size) else "photos"
    if style == "hard":
        base, image, instances, case.ops, case.kind = hard.hard_case(rng, case.forged, min_size, max_size, sources)
    else:
        draw = _figure_case if style == "figures" else _photo_case
        base, image, instances, case.ops = draw(case, rng, min_size, max_size)
    case.height, case.width = base.shape[:2]
    case.channels = 1 if base.ndim == 2 else 3
    case.bit16 = base.ndim == 2 and bool(rng.random() < GRAY_16BIT_PROB)
    case.post = hard.draw_post(rng) if style == "hard" else draw_post(rng)
    files = {}
    if case.split == "test":
        files[os.path.join("test_images", case.case_id + ".png")] = post_process(image, case.post)
    else:
        label = "forged" if case.forged else "authentic"
        files[os.path.join("train_images", label, case.case_id + ".png")] = post_process(image, case.post)
        if case.paired:
            files[os.path.join("train_images", "authentic", case.case_id + ".png")] = post_process(base, case.post)
    return files, instances


OUTPUT_FOLDERS = ("train_images", "train_masks", "test_images")


def owned(rel: str) -> bool:
    """The files ``generate`` writes in its output directory (the only ones ``overwrite`` replaces)."""
    return rel in (META_FILE, SOLUTION_FILE) or rel.split("/", 1)[0] in OUTPUT_FOLDERS


def generate(output_dir: str, num_train: int, num_test: int, seed: int, min_size: int = SynthConfig.min_size,
             max_size: int = SynthConfig.max_size, show_progress: Optional[bool] = None,
             style: str = SynthConfig.style, overwrite: bool = False, sources: str = SynthConfig.sources) -> dict:
    """Write a synthetic dataset in the competition layout; returns a summary (also in synth_meta.json).

    ``style`` is ``photos``, ``figures``, ``mixed`` (module docstring) or ``hard`` (``synth.hard``,
    with ``sources``). Photos have both sides in
    [min_size, max_size]; a figure page is 400-1500 px wide by default (``figure_layout`` gives
    the rule for other bounds) and needs max_size >= 128: below that ``mixed`` makes photos only.
    The dataset is written to a staging folder and moved into ``output_dir`` when complete. A
    non-empty ``output_dir`` is refused unless ``overwrite``, which replaces only what this
    generator writes (its three folders, test_solution.csv, synth_meta.json).
    """
    if num_train < 0 or num_test < 0:
        raise UsageError("num_train and num_test must be >= 0")
    if not 16 <= min_size < max_size:
        raise UsageError(f"need 16 <= min_size < max_size (images are never square), got {min_size}, {max_size}")
    if style not in STYLES:
        raise UsageError(f"style must be one of {STYLES}, got {style!r}")
    if sources not in hard.SOURCES:
        raise UsageError(f"sources must be one of {hard.SOURCES}, got {sources!r}")
    if style == "figures" and not figures_fit(max_size):
        raise UsageError(f"style 'figures' needs a larger max_size than {max_size} (pages of at least 128 px)")
    if not available_science_images():
        raise RuntimeError("no scikit-image sample image could be loaded")
    output_dir = outputs.check_dir(output_dir, overwrite=overwrite, owned=owned)
    with outputs.staged_local_dir(output_dir, owned) as staging:
        return _write_dataset(staging, num_train, num_test, seed, min_size, max_size, show_progress, style, sources)


def case_streams(seed: int, num_train: int, num_test: int) -> list[tuple[SynthCase, np.random.SeedSequence]]:
    """Every planned case of a set with its own random stream: a case depends on its stream only,
    so one case can be made again without the others (``replay_case``)."""
    plan_seq, cases_seq = np.random.SeedSequence(seed).spawn(2)
    plan = _plan(np.random.default_rng(plan_seq), num_train, num_test)
    return list(zip(plan, cases_seq.spawn(len(plan))))


def replay_case(case_id: str, num_train: int, num_test: int, seed: int, min_size: int = SynthConfig.min_size,
                max_size: int = SynthConfig.max_size, style: str = SynthConfig.style,
                sources: str = SynthConfig.sources) -> tuple[np.ndarray, SynthCase]:
    """(image as written, case record) of case ``case_id`` of the set ``generate`` makes with these
    arguments, without writing the set: how a test pins one case a benchmark set showed."""
    files, _, case = _replay(case_id, num_train, num_test, seed, min_size, max_size, style, sources)
    return next(iter(files.values())), case


def replay_truth(case_id: str, num_train: int, num_test: int, seed: int, min_size: int = SynthConfig.min_size,
                 max_size: int = SynthConfig.max_size, style: str = SynthConfig.style,
                 sources: str = SynthConfig.sources) -> list[np.ndarray]:
    """The true instance masks of the case ``replay_case`` makes ([] for an authentic case)."""
    return list(_replay(case_id, num_train, num_test, seed, min_size, max_size, style, sources)[1] or [])


def _replay(case_id: str, num_train: int, num_test: int, seed: int, min_size: int, max_size: int, style: str,
            sources: str) -> tuple[dict, Optional[list], SynthCase]:
    for case, seq in case_streams(seed, num_train, num_test):
        if case.case_id == case_id:
            files, instances = _make_case(case, np.random.default_rng(seq), min_size, max_size, style, sources)
            return files, instances, case
    raise KeyError(f"no case {case_id!r} in the set of seed {seed} ({num_train} train, {num_test} test cases)")


def _write_dataset(output_dir: str, num_train: int, num_test: int, seed: int, min_size: int, max_size: int,
                   show_progress: Optional[bool], style: str, sources: str = SynthConfig.sources) -> dict:
    for sub in ("train_images/authentic", "train_images/forged", "train_masks", "test_images"):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)

    streams = case_streams(seed, num_train, num_test)
    plan = [case for case, _ in streams]
    if show_progress is None:
        show_progress = num_train + num_test > 50
    iterator = streams
    if show_progress:
        from tqdm import tqdm

        iterator = tqdm(streams, desc="synth", unit="case")

    solution_rows = []
    for case, seq in iterator:
        files, instances = _make_case(case, np.random.default_rng(seq), min_size, max_size, style, sources)
        for rel, img in files.items():
            write_png(os.path.join(output_dir, rel), img, case.bit16)
        if case.split == "train" and case.forged:
            np.save(os.path.join(output_dir, "train_masks", case.case_id + ".npy"), np.stack(instances))
        if case.split == "test":
            annotation = rle.encode(instances) if case.forged else rle.AUTHENTIC
            solution_rows.append((case.case_id, annotation, case.height, case.width))

    with open(os.path.join(output_dir, SOLUTION_FILE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "annotation", "height", "width"])
        writer.writerows(sorted(solution_rows))

    train = [c for c in plan if c.split == "train"]
    test = [c for c in plan if c.split == "test"]
    summary = {
        "version": VERSION,
        "seed": seed,
        "options": {"num_train": num_train, "num_test": num_test, "min_size": min_size, "max_size": max_size},
        "style": style,
        **({"sources": sources} if style == "hard" else {}),
        "train": {"images": num_train, "forged": sum(c.forged for c in train),
                  "authentic": sum(not c.forged for c in train) + sum(c.paired for c in train),
                  "pairs": sum(c.paired for c in train)},
        "test": {"images": len(test), "forged": sum(c.forged for c in test),
                 "authentic": sum(not c.forged for c in test)},
        "operations": sum(len(c.ops) for c in plan),
        "science_images": list(available_science_images()),
        "cases": [c.to_dict() for c in plan],
    }
    with open(os.path.join(output_dir, META_FILE), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
