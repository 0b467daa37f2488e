"""The files that let a run survive kills and relaunches: config.json, state.json, the resume backup, the log.

A model directory goes through three stages, recorded in ``state.json`` (written atomically):
``training`` (BackupAndRestore's ``backup/`` holds the last finished epoch) -> ``trained`` (fit has
returned; the best weights are in ``best.weights.h5``) -> ``exported`` (``export/`` is complete;
only now is ``backup/`` deleted). A relaunch resumes training, re-exports, or says the run is
finished, and never trains again what was trained. ``config.json`` holds the resolved
configuration: a relaunch with different values is refused, naming the fields that differ.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass
from typing import Optional

from preprocessing import fileio, hyperparams, outputs
from preprocessing.errors import UsageError
from trainer import config
from trainer.distribute import WORKERS_DIR

STATE_FILE = "state.json"
BACKUP_DIR = "backup"
BEST_WEIGHTS = "best.weights.h5"
CSV_LOG = "training_log.csv"
EXPORT_DIR = "export"

TRAINING, TRAINED, EXPORTED = "training", "trained", "exported"
# BackupAndRestore's files (Keras 3): the weights and the epoch they belong to, and the previous pair.
BACKUP_WEIGHTS, BACKUP_META = "latest.weights.h5", "training_metadata.json"
PREVIOUS_SUFFIX = ".bkp"


def read_state(model_dir: str) -> str:
    path = fileio.join(model_dir, STATE_FILE)
    if not fileio.exists(path):
        return ""
    try:
        return json.loads(fileio.read_text(path))["stage"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: damaged run state ({exc}); remove it to resume from the backup") from exc


def write_state(model_dir: str, stage: str, **extra) -> None:
    outputs.write_text(fileio.join(model_dir, STATE_FILE), json.dumps({"stage": stage, **extra}) + "\n")


def check_model_dir(cfg: config.TrainConfig) -> None:
    """Refuse a model directory that holds something else: another project's files, or a run of a
    different configuration (naming the fields that differ). Called on the chief before training."""
    model_dir = cfg.model_dir
    saved_path = fileio.join(model_dir, config.CONFIG_FILE)
    if not fileio.isdir(model_dir):
        if fileio.exists(model_dir):
            raise UsageError(f"--model_dir {model_dir} is a file; give a directory")
        return
    if not fileio.exists(saved_path):
        foreign = [n for n in fileio.listdir(model_dir) if n != WORKERS_DIR]  # other workers may start first
        if foreign:
            raise UsageError(f"--model_dir {model_dir} is not empty ({', '.join(sorted(foreign)[:5])}) and holds no "
                             f"{config.CONFIG_FILE}: it is not a run of this trainer; choose a new or empty directory")
        return
    saved = config.load(saved_path)
    diff = hyperparams.changed_fields(saved.reproducible_dict(), cfg.reproducible_dict())
    if diff:
        raise UsageError(f"{model_dir} holds a run with a different configuration: {', '.join(diff)}. Relaunch "
                         f"with the same values (e.g. --config {saved_path}), or use another --model_dir")


def save_config(cfg: config.TrainConfig) -> None:
    fileio.makedirs(cfg.model_dir)
    outputs.write_text(fileio.join(cfg.model_dir, config.CONFIG_FILE), config.to_json(cfg))


# ----------------------------------------------------------------------------- the resume backup

def _readable_h5(path: str) -> Optional[str]:
    """None if the HDF5 file opens and lists its groups, else why not."""
    import h5py

    try:
        with fileio.open_file(path, "rb") as raw, h5py.File(raw, "r") as f:
            list(f.keys())
        return None
    except Exception as exc:  # h5py raises OSError / KeyError / RuntimeError for damaged files
        return f"{type(exc).__name__}: {exc}"


def _backup_epoch(weights: str, meta: str) -> tuple[Optional[int], Optional[str]]:
    """(epochs finished, None) for a readable weights + metadata pair, else (None, what is wrong)."""
    if not fileio.exists(weights):
        return None, f"{weights} is missing"
    problem = _readable_h5(weights)
    if problem:
        return None, f"{weights} is damaged ({problem})"
    try:
        return int(json.loads(fileio.read_text(meta))["epoch"]), None
    except FileNotFoundError:
        return None, f"{meta} is missing"
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return None, f"{meta} is damaged ({exc})"


@dataclass
class Resume:
    epoch: int  # epochs already finished (0: start over)
    note: str  # what happened, for the log


def prepare_backup(work_dir: str, stream=sys.stdout) -> Resume:
    """Check the resume backup before Keras reads it (Keras would stop every relaunch with an h5py
    error naming no file). A damaged latest state falls back to the previous one, as Keras'
    ``double_checkpoint`` does; if neither is readable, the backup is moved aside (named in the
    warning) and training starts over."""
    folder = fileio.join(work_dir, BACKUP_DIR)
    if not fileio.isdir(folder):
        return Resume(0, "")
    weights, meta = fileio.join(folder, BACKUP_WEIGHTS), fileio.join(folder, BACKUP_META)
    epoch, latest_problem = _backup_epoch(weights, meta)
    if epoch is not None:
        return Resume(epoch, f"resuming after epoch {epoch} from {folder}")
    prev_epoch, prev_problem = _backup_epoch(weights + PREVIOUS_SUFFIX, meta + PREVIOUS_SUFFIX)
    if prev_epoch is not None:
        for name in (BACKUP_WEIGHTS, BACKUP_META):  # what Keras' fallback would do, done here so it is logged
            if fileio.exists(fileio.join(folder, name + PREVIOUS_SUFFIX)):
                fileio.rename(fileio.join(folder, name + PREVIOUS_SUFFIX), fileio.join(folder, name))
        note = f"warning: {latest_problem}; resuming from the previous state (after epoch {prev_epoch})"
        print(note, file=stream, flush=True)
        return Resume(prev_epoch, note)
    aside = f"{folder}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    fileio.rename_dir(folder, aside)
    note = (f"warning: the resume backup cannot be read: {latest_problem}"
            + (f"; {prev_problem}" if fileio.exists(fileio.join(aside, BACKUP_WEIGHTS + PREVIOUS_SUFFIX)) else "")
            + f". It was moved to {aside}; training starts over from epoch 1")
    print(note, file=stream, flush=True)
    return Resume(0, note)


def check_best_weights(work_dir: str, stream=sys.stdout) -> None:
    """A best-weights file torn by a kill is moved aside (named), so the run re-earns it."""
    path = fileio.join(work_dir, BEST_WEIGHTS)
    if fileio.exists(path):
        problem = _readable_h5(path)
        if problem:
            aside = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            fileio.rename(path, aside)
            print(f"warning: {path} is damaged ({problem}); moved to {aside}", file=stream, flush=True)


def trim_log(csv_path: str, keep_epochs: int) -> None:
    """Keep only the CSV log rows of the ``keep_epochs`` epochs a resumed run does not repeat (a
    kill after the log line but before the backup would otherwise log an epoch twice)."""
    if not fileio.exists(csv_path):
        return
    reader = csv.DictReader(io.StringIO(fileio.read_text(csv_path)))
    rows, fields = list(reader), reader.fieldnames
    kept = [r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) < keep_epochs]
    if len(kept) == len(rows):
        return
    if not kept:
        fileio.remove(csv_path)
        return
    with outputs.atomic_file(csv_path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)


def remove_backup(work_dir: str) -> None:
    """Delete the resume backup: called once the export and its metadata are complete."""
    folder = fileio.join(work_dir, BACKUP_DIR)
    if fileio.isdir(folder):
        fileio.rmtree(folder)
