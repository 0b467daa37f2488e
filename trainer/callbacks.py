"""The training run's callbacks, in the order ``make_callbacks`` gives them: metrics first (they add to
the logs), then what reads them, the resume backup last (after everything that changes the weights
or the learning rate)."""
from __future__ import annotations

import csv
import io
import sys
import time

import keras
import tensorflow as tf

from preprocessing import fileio
from preprocessing.progress import Heartbeat
from serving import postprocess
from trainer import run_state
from trainer.config import TrainConfig
from trainer.distribute import is_multi_worker
from trainer.validation import score_dataset


class ValidationOF1(keras.callbacks.Callback):
    """Adds val_of1 (and its authentic/forged parts) to the epoch logs, before the callbacks that
    watch it. Every worker computes it on the whole split, so their decisions agree."""

    def __init__(self, dataset, cfg: postprocess.PostprocessConfig):
        super().__init__()
        self.dataset = dataset
        self.cfg = cfg
        self._predict = None

    def on_epoch_end(self, epoch, logs=None):
        if self._predict is None:
            self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        result = score_dataset(self._predict, self.dataset, self.cfg)
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in result.items()})


class TimeBudget(keras.callbacks.Callback):
    """Stop cleanly once ``minutes`` have passed. Checked after every batch on one worker; with
    several workers only at epoch end and by all-reduce, so all workers stop together."""

    def __init__(self, minutes: float, strategy):
        super().__init__()
        self.seconds = minutes * 60.0
        self.strategy = strategy
        self.multi = is_multi_worker(strategy)
        self.start = time.monotonic()
        self.stopped = False

    def _over(self) -> bool:
        return time.monotonic() - self.start > self.seconds

    def on_train_batch_end(self, batch, logs=None):
        if not self.multi and self._over():
            self.model.stop_training = self.stopped = True

    def on_epoch_end(self, epoch, logs=None):
        over = self._over()
        if self.multi:
            vote = tf.constant(1.0 if over else 0.0)

            def agree():
                return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, vote)

            over = float(self.strategy.experimental_local_results(self.strategy.run(agree))[0]) > 0
        if over:
            self.model.stop_training = self.stopped = True


def _pick(logs: dict, *keys):
    for k in keys:
        if k in logs:
            return float(logs[k])
    return float("nan")


def learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochSummary(keras.callbacks.Callback):
    """One readable line per epoch: the metrics that matter, and the monitored one with its best so far
    (the epoch whose weights the checkpoint keeps and the export will use), epochs counted from 1."""

    def __init__(self, epochs: int, monitor: str, best: dict, stream=sys.stdout):
        super().__init__()
        self.epochs, self.monitor, self.stream = epochs, monitor, stream
        self.better = max if monitor_mode(monitor) == "max" else min
        self.best_value, self.best_epoch = best.get(monitor), best.get("epoch")  # an earlier launch's best

    def on_train_begin(self, logs=None):
        self.beat = Heartbeat("training").start()  # an epoch (or building the graph) can take minutes

    def on_train_end(self, logs=None):
        self.beat.stop()

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.monotonic()
        self.beat.restart(f"epoch {epoch + 1}/{self.epochs}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = _pick(logs, self.monitor)
        if value == value and (self.best_value is None or self.better(value, self.best_value) != self.best_value):
            self.best_value, self.best_epoch = value, epoch + 1
        best = "-" if self.best_value is None else f"{self.best_value:.4f} (epoch {self.best_epoch})"
        print(f"epoch {epoch + 1}/{self.epochs}: loss {_pick(logs, 'loss'):.4f}, val_loss "
              f"{_pick(logs, 'val_loss'):.4f}, val Dice {_pick(logs, 'val_mask_dice', 'val_dice'):.4f}, val oF1 "
              f"{_pick(logs, 'val_of1'):.4f} (authentic {_pick(logs, 'val_of1_authentic'):.2f}, forged "
              f"{_pick(logs, 'val_of1_forged'):.2f}), lr {learning_rate(self.model):.1e}, "
              f"{time.monotonic() - self.t0:.0f} s | best {self.monitor} {best}", file=self.stream, flush=True)
        self.beat.restart("training")


class CSVLog(keras.callbacks.CSVLogger):
    """Keras' CSVLogger, also for remote paths: Keras asks its file for ``.closed``, which a GFile
    (``gs://``, ``ram://``) does not have, and fails at the end of training."""

    def on_train_begin(self, logs=None):
        self._close()
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        self._close()
        self.writer = None

    def _close(self):
        if self.csv_file is not None:
            self.csv_file.close()
            self.csv_file = None


def best_logged(csv_path: str, monitor: str, mode: str) -> dict:
    """The best epoch's row of the CSV log by ``monitor`` (all launches of a resumed run), or {}:
    the metrics, ``monitor`` (its name) and ``epoch`` counted from 1 as the console prints it (the
    log, like Keras, counts from 0)."""
    if not fileio.exists(csv_path):
        return {}
    rows = [r for r in csv.DictReader(io.StringIO(fileio.read_text(csv_path))) if r.get(monitor) not in (None, "")]
    if not rows:
        return {}
    pick = max if mode == "max" else min
    best = pick(rows, key=lambda r: float(r[monitor]))
    row = {k: float(v) for k, v in best.items() if v not in (None, "")}
    return {**row, "epoch": int(row["epoch"]) + 1, "monitor": monitor}


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def make_callbacks(cfg: TrainConfig, out_dir: str, strategy, val_ids, pp_cfg: postprocess.PostprocessConfig,
                   extra: tuple = ()) -> list:
    """In order: metrics first (they add to the logs), then the callbacks that read them,
    BackupAndRestore after everything that changes the weights or the learning rate; ``extra``
    (tests inject theirs here) last."""
    mode = monitor_mode(cfg.monitor)
    csv_path = fileio.join(out_dir, run_state.CSV_LOG)
    earlier_best = best_logged(csv_path, cfg.monitor, mode)  # a resumed run's best so far
    callbacks = [ValidationOF1(val_ids, pp_cfg)]
    if cfg.max_minutes > 0:
        callbacks.append(TimeBudget(cfg.max_minutes, strategy))
    callbacks += [
        # The seed's schedule on val_loss: halve the rate after 3 flat epochs, stop after 5. Not on
        # val_of1: it sits on the "everything authentic" plateau for many epochs early in training.
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=cfg.lr_patience,
                                          min_lr=1e-6, verbose=0),
        # Before EarlyStopping: on its last epoch it swaps in older weights.
        keras.callbacks.ModelCheckpoint(fileio.join(out_dir, run_state.BEST_WEIGHTS), monitor=cfg.monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=earlier_best.get(cfg.monitor)),
        # Silent: its "restoring the best epoch" is by val_loss, but the export takes the checkpoint's
        # weights (by cfg.monitor); EpochSummary and train.run say which epoch that is.
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stopping_patience,
                                      start_from_epoch=cfg.early_stopping_start, restore_best_weights=True,
                                      verbose=0),
        CSVLog(csv_path, append=True),
        keras.callbacks.TensorBoard(fileio.join(out_dir, "logs"), profile_batch=0),
        EpochSummary(cfg.epochs, cfg.monitor, earlier_best),
        # Two states (the previous one survives a kill while the latest is written), kept after fit:
        # the run deletes it only once the export is complete (trainer.run_state).
        keras.callbacks.BackupAndRestore(fileio.join(out_dir, run_state.BACKUP_DIR), double_checkpoint=True,
                                         delete_checkpoint=False),
    ]
    return callbacks + list(extra)


