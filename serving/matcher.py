"""The matcher detector: native-resolution matching (``preprocessing.matching``) over image files.

``detect`` (the expensive part: keypoints, dense search, verification) runs once per image, in a
pool of processes (``workers``, one image at a time each, so memory stays bounded by the matcher's
working resolution); ``decide`` (cheap) turns a Detection into pairs with the decision parameters,
so calibration can try many of them on cached detections. Every file is accounted for: a
Detection, or an error record ``{"case_id", "path", "reason"}``.

A worker that dies (killed, out of memory) does not end the run: the images it may have held are
retried one at a time in a fresh process, and one that kills its process again becomes an error
record (``worker_crashed``). Workers exit within ``PARENT_POLL_S`` when the process that started
them dies (``kill``, ``kill -9``), instead of waiting for work forever.

The evidence a reviewer reads (``<output stem>.evidence.jsonl``): per image the verdict and, per
copy pair, its two instances (their indices in the submission's annotation), the boxes, the
transform in words and numbers, inlier count, correlation and strength.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Optional

from tqdm import tqdm

from preprocessing import cli, rle
from preprocessing.errors import BadInput
from preprocessing.images import read_rgb8
from preprocessing.matching import DecisionParams, Detection, MatcherConfig, decide, describe, detect, instances_of
from serving.submission import ScoreResult

IN_FLIGHT = 2  # images queued per worker: keeps each busy while the next one is handed over, and bounds
#               how many images a crashed worker can take with it into the one-at-a-time retry
PARENT_POLL_S = 1.0  # how often a worker checks that its parent is alive (the bound on an orphan's life)
# Test hook: a worker analysing a file of this name kills itself with SIGKILL, as the out-of-memory killer
# would (tests/test_matcher_workers.py). Unset in normal runs.
CRASH_TEST_ENV = "COPYMOVE_TEST_KILL_WORKER_ON"
WORKER_CRASHED = ("worker_crashed: the matcher process reading this image died (killed, e.g. out of memory), "
                  "also when the image was retried alone")


@dataclass
class Analysed:
    """One image through ``detect``: its Detection, or the error that kept it from being read."""

    case_id: str
    path: str
    detection: Optional[Detection] = None
    error: Optional[dict] = None


def analyse(item: tuple[str, str], config: MatcherConfig = MatcherConfig()) -> Analysed:
    """Read one file (preprocessing.images' conversion) and match it; a bad file is an error record."""
    case_id, path = item
    if os.environ.get(CRASH_TEST_ENV) and os.path.basename(path) == os.environ[CRASH_TEST_ENV]:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        rgb = read_rgb8(path)
    except BadInput as exc:
        return Analysed(case_id, path, error={"case_id": case_id, "path": path, "reason": exc.reason})
    return Analysed(case_id, path, detection=detect(rgb, config))


def config_for(network_reads_evidence: bool) -> MatcherConfig:
    """The matcher's settings for a run: its defaults, plus the dense field's planes when a network
    reads the evidence map (``preprocessing.matching.evidence.EVIDENCE_CONFIG``; same verdicts)."""
    if not network_reads_evidence:
        return MatcherConfig()
    from preprocessing.matching.evidence import EVIDENCE_CONFIG

    return EVIDENCE_CONFIG


def _analyse_star(args) -> Analysed:
    return analyse(*args)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a thread that ends this worker once ``parent`` is gone (an orphan is
    re-parented, so its parent pid changes), rather than leaving it blocked on the task queue."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, initializer=_exit_with_parent, initargs=(os.getpid(),))


def _alone(job) -> Analysed:
    """``job`` in a process of its own: its Analysed, or a ``worker_crashed`` error record if that
    process dies too."""
    with _pool(1) as pool:
        try:
            return pool.submit(_analyse_star, job).result()
        except BrokenProcessPool:
            case_id, path = job[0]
            return Analysed(case_id, path, error={"case_id": case_id, "path": path, "reason": WORKER_CRASHED})


def _pooled(jobs: list, workers: int) -> Iterator[tuple[int, Analysed]]:
    """(index, Analysed) of every job, in completion order, in ``workers`` processes. A dead worker
    breaks the whole pool, and its futures cannot say which image killed it: every image in flight
    then is retried ``_alone`` and a fresh pool takes the rest."""
    queue = list(range(len(jobs)))[::-1]
    while queue:
        running, suspects = {}, []
        with _pool(workers) as pool:
            while (queue or running) and not suspects:
                while queue and len(running) < workers * IN_FLIGHT:
                    i = queue.pop()
                    running[pool.submit(_analyse_star, jobs[i])] = i
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        suspects.append(i)
                    else:
                        yield i, future.result()  # another exception is a bug: it ends the run
            for future, i in running.items():  # still queued or running when the pool broke
                if future.done() and future.exception() is None:
                    yield i, future.result()
                else:
                    suspects.append(i)
        for i in sorted(suspects):
            yield i, _alone(jobs[i])


def iter_analysed(items: Sequence[tuple[str, str]], config: MatcherConfig = MatcherConfig(), workers: int = 1,
                  progress: bool = True) -> Iterator[Analysed]:
    """``analyse`` every item, in order, in ``workers`` processes (1: in this process; never more
    than the items or the cores: ``cli.worker_count``)."""
    workers = cli.worker_count(workers, len(items))
    bar = tqdm(total=len(items), desc="matching", unit="img", disable=not progress, file=sys.stderr)
    jobs = [(item, config) for item in items]
    if workers <= 1:
        for job in jobs:
            yield _analyse_star(job)
            bar.update(1)
    else:
        ready, next_index = {}, 0
        for i, result in _pooled(jobs, workers):
            ready[i] = result
            bar.update(1)
            while next_index in ready:
                yield ready.pop(next_index)
                next_index += 1
    bar.close()


def detections_of(items: Sequence[tuple[str, str]], config: MatcherConfig = MatcherConfig(), workers: int = 1,
                  progress: bool = True) -> dict:
    """case_id -> Detection for every readable item (unreadable ones are left out: the caller's own
    checks record them)."""
    return {a.case_id: a.detection for a in iter_analysed(items, config, workers, progress) if a.detection}


@dataclass
class Verdict:
    """The decision for one image: its instances (source, copy, source, copy, ...) and the pairs."""

    case_id: str
    annotation: str
    pairs: list = field(default_factory=list)


def verdict(a: Analysed, params: DecisionParams) -> Verdict:
    pairs = decide(a.detection, params)
    return Verdict(a.case_id, rle.encode(instances_of(pairs, a.detection.shape)) if pairs else rle.AUTHENTIC, pairs)


def evidence_record(a: Analysed, pairs: Sequence) -> dict:
    """What a reviewer reads about one image (one line of the evidence file): its verdict and, per
    decided pair, its two instances (``2k`` source, ``2k + 1`` copy in the annotation)."""
    described = [{"source_instance": 2 * k, "copy_instance": 2 * k + 1, "description": describe(p), **p.to_dict()}
                 for k, p in enumerate(pairs)]
    det = a.detection
    return {"case_id": a.case_id, "path": a.path, "height": det.shape[0], "width": det.shape[1],
            "verdict": "forged" if pairs else "authentic", "pairs": described,
            "panels": [{"box": list(p.box), "kind": p.kind} for p in det.panels],
            "candidates": len(det.candidates)}


def outcome(a: Analysed, params: DecisionParams) -> tuple[str, dict]:
    """One analysed image -> (its annotation, its evidence record): the matcher detector's whole
    per-image decision (``score_items`` and the Beam scoring job both call it)."""
    v = verdict(a, params)
    return v.annotation, evidence_record(a, v.pairs)


def score_items(items: Sequence[tuple[str, str]], params: DecisionParams = DecisionParams(),
                config: MatcherConfig = MatcherConfig(), workers: int = 1,
                progress: bool = True) -> tuple[ScoreResult, list[dict]]:
    """Submission rows for every item (unreadable files ``authentic``) and the evidence records."""
    rows, errors, evidence = {}, [], []
    for a in iter_analysed(items, config, workers, progress):
        if a.error:
            errors.append(a.error)
            rows[a.case_id] = rle.AUTHENTIC
            continue
        rows[a.case_id], record = outcome(a, params)
        evidence.append(record)
    return ScoreResult(sorted(rows.items()), errors), sorted(evidence, key=lambda e: e["case_id"])
