"""The training run behind ``python -m trainer.main``: precision, strategy, callbacks, fit, export.

``run(cfg)`` is the whole run; ``trainer.main`` only turns flags into a
``TrainConfig`` and sets up devices before TensorFlow initialises.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace

import keras
import numpy as np
import tensorflow as tf

from serving import metric, postprocess
from trainer import data, export, losses
from trainer.model import ModelConfig, build_model, has_image_head, is_multi_worker, model_images, select_targets

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
BEST_WEIGHTS = "best.weights.h5"
CSV_LOG = "training_log.csv"
IMAGE_HEAD_THRESHOLD = 0.5  # post-processing gate for models with an image-level head


@dataclass
class TrainConfig:
    data_dir: str
    model_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)  # image_size is taken from the manifest
    epochs: int = 50
    batch_size: int = 16  # global
    learning_rate: float = 1e-3
    loss: str = "bce_dice"
    image_loss_weight: float = 1.0
    precision: str = "auto"
    strategy: str = "auto"
    max_minutes: float = 0.0  # 0: no time budget
    seed: int = 42
    steps_per_epoch: int = 0  # 0: one pass over the training split
    forged_fraction: float = 0.0  # 0: the split's natural mix
    monitor: str = "val_of1"  # what the best checkpoint (and so the export) is chosen by
    lr_patience: int = 3
    early_stopping_patience: int = 5
    # Epochs before early stopping may act: while BatchNorm statistics settle, val_loss is noisy
    # and the first epoch can look best (a short run then stops after 6 epochs having learnt nothing).
    early_stopping_start: int = 10
    jpeg_augment: bool = True
    export: bool = True
    verbose: int = 1
    exit_after_epoch: int = 0  # testing aid: exit the process hard after this epoch (simulates a kill)


# --- devices, precision, strategy ---------------------------------------------------------------

def split_cpu(n: int) -> None:
    """Make ``n`` logical CPU devices so MirroredStrategy has n replicas without GPUs (before TF init)."""
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU has native bfloat16 matmuls/convolutions."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str) -> str:
    """``auto``: mixed_float16 on GPUs with tensor cores (compute capability >= 7.0), float32 on
    older GPUs; on CPUs mixed_bfloat16 where the CPU has bf16 instructions (benchmarks/train_step.py
    measured it faster than float32 on this machine's AVX512-BF16 CPU), else float32."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {PRECISIONS}")
    if name != "auto":
        return name
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_float16" if tuple(cc) >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``auto``: multi_worker when TF_CONFIG names a cluster, mirrored with several devices, else one_device.

    MultiWorkerMirroredStrategy must be created before anything initialises TensorFlow's
    runtime (listing logical devices does), so it is decided first.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    if name == "multi_worker" or (name == "auto" and os.environ.get("TF_CONFIG")):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if name == "mirrored" or (name == "auto" and len(devices) > 1):
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(devices[0])


def is_chief(strategy) -> bool:
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    r = strategy.cluster_resolver
    return r.task_type in (None, "chief") or (r.task_type == "worker" and r.task_id == 0
                                               and "chief" not in r.cluster_spec().as_dict())


def work_dir(model_dir: str, strategy) -> str:
    """The chief writes to model_dir; other workers write their (identical) files to a scratch
    subdirectory, so two workers never write one file."""
    if is_chief(strategy):
        return model_dir
    r = strategy.cluster_resolver
    return os.path.join(model_dir, "workers", f"{r.task_type}_{r.task_id}")


# --- validation oF1 -------------------------------------------------------------------------------

def gt_instances(union_mask: np.ndarray) -> list[np.ndarray]:
    """Ground-truth instances from a stored union mask: its 4-connected components.

    Records keep only the union of the instances, so this is an approximation of the
    competition's instances: a source and its copy that touch become one instance, and an
    instance that the resize split in two becomes two. It is scored at the model size (the
    stored mask enlarged with its image, as in training).
    """
    return postprocess.union_instances(np.asarray(union_mask).squeeze(-1))


def postprocess_config(image_head: bool) -> postprocess.PostprocessConfig:
    """The seed's defaults (threshold 0.45, min area 32); with an image head, an image is called
    forged only when the head says so (>= 0.5), until calibration picks better values."""
    return postprocess.PostprocessConfig(image_threshold=IMAGE_HEAD_THRESHOLD if image_head else 0.0)


def score_dataset(predict, dataset, cfg: postprocess.PostprocessConfig) -> dict:
    """oF1 over a ``with_ids`` dataset with serving's post-processing and metric."""
    scores, forged_truth, forged_pred = [], [], []
    for inputs, targets, _ in dataset:
        images, masks = model_images(inputs, targets["mask"])
        out = predict(images)
        probs = out["mask"].numpy()[..., 0]
        heads = out["image"].numpy()[:, 0] if "image" in out else [None] * len(probs)
        for prob, mask, head in zip(probs, masks.numpy(), heads):
            gt = gt_instances(mask)
            pred = postprocess.instances(prob, prob.shape, cfg, image_score=head)
            scores.append(metric.image_score(pred, gt))
            forged_truth.append(bool(gt))
            forged_pred.append(bool(pred))
    s, t, p = np.array(scores), np.array(forged_truth, bool), np.array(forged_pred, bool)
    return {"of1": float(s.mean()) if len(s) else 0.0,
            "of1_forged": float(s[t].mean()) if t.any() else 0.0,
            "of1_authentic": float(s[~t].mean()) if (~t).any() else 0.0,
            "pred_forged_fraction": float(p.mean()) if len(p) else 0.0}


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


# --- the other callbacks ------------------------------------------------------------------------

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
    """One readable line per epoch."""

    def __init__(self, epochs: int, examples_per_epoch: int, stream=sys.stdout):
        super().__init__()
        self.epochs, self.examples_per_epoch, self.stream = epochs, examples_per_epoch, stream

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"epoch {epoch + 1}/{self.epochs}: {(epoch + 1) * self.examples_per_epoch} examples seen, "
              f"loss {_pick(logs, 'loss'):.4f}, val_loss {_pick(logs, 'val_loss'):.4f}, "
              f"val Dice {_pick(logs, 'val_mask_dice', 'val_dice'):.4f}, "
              f"val oF1 {_pick(logs, 'val_of1'):.4f} (authentic {_pick(logs, 'val_of1_authentic'):.3f}, "
              f"forged {_pick(logs, 'val_of1_forged'):.3f}), lr {learning_rate(self.model):.2e}, "
              f"{time.monotonic() - self.t0:.1f} s", file=self.stream, flush=True)


class ExitAfterEpoch(keras.callbacks.Callback):
    """Testing aid: leave the process without any cleanup after ``epoch`` (1-based), like a kill."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            sys.stdout.flush()
            os._exit(75)


def best_logged(csv_path: str, monitor: str, mode: str) -> dict:
    """The best epoch's row of the CSV log by ``monitor`` (all launches of a resumed run), or {}."""
    if not os.path.exists(csv_path):
        return {}
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get(monitor) not in (None, "")]
    if not rows:
        return {}
    pick = max if mode == "max" else min
    best = pick(rows, key=lambda r: float(r[monitor]))
    return {k: float(v) for k, v in best.items() if v not in (None, "")}


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def make_callbacks(cfg: TrainConfig, out_dir: str, strategy, val_ids, pp_cfg, examples_per_epoch):
    """In order: metrics first (they add to the logs), then the callbacks that read them,
    BackupAndRestore after everything that changes the weights or the learning rate."""
    mode = monitor_mode(cfg.monitor)
    csv_path = os.path.join(out_dir, CSV_LOG)
    callbacks = [ValidationOF1(val_ids, pp_cfg)]
    if cfg.max_minutes > 0:
        callbacks.append(TimeBudget(cfg.max_minutes, strategy))
    callbacks += [
        # The seed's schedule on val_loss: halve the rate after 3 flat epochs, stop after 5. Not on
        # val_of1: it sits on the "everything authentic" plateau for many epochs early in training.
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=cfg.lr_patience,
                                          min_lr=1e-6, verbose=0),
        # Before EarlyStopping: on its last epoch it swaps in older weights.
        keras.callbacks.ModelCheckpoint(os.path.join(out_dir, BEST_WEIGHTS), monitor=cfg.monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best_logged(csv_path, cfg.monitor, mode).get(
                                            cfg.monitor)),
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stopping_patience,
                                      start_from_epoch=cfg.early_stopping_start, restore_best_weights=True,
                                      verbose=1),
        keras.callbacks.CSVLogger(csv_path, append=True),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), profile_batch=0),
        EpochSummary(cfg.epochs, examples_per_epoch),
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
    ]
    if cfg.exit_after_epoch:
        callbacks.append(ExitAfterEpoch(cfg.exit_after_epoch))
    return callbacks


# --- the run ------------------------------------------------------------------------------------

def compile_model(model, cfg: TrainConfig, image_head: bool) -> None:
    loss = {"mask": losses.get_loss(cfg.loss)}
    weights = {"mask": 1.0}
    if image_head:
        loss["image"] = keras.losses.BinaryCrossentropy()
        weights["image"] = cfg.image_loss_weight
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss, loss_weights=weights,
                  metrics={"mask": [losses.DiceCoef(), losses.PixelF1()]})


def _repeated(strategy, cfg: TrainConfig, split: str, training: bool, output_names):
    """Distributed, repeated dataset: with a fixed number of steps per epoch every worker runs the
    same number of steps even when their shards differ in size."""
    kwargs = dict(seed=cfg.seed if training else None)
    if training:
        kwargs.update(forged_fraction=cfg.forged_fraction or None, augment_jpeg=cfg.jpeg_augment)

    def dataset_fn(ctx):
        ds = data.make_dataset(cfg.data_dir, split, cfg.batch_size, training, input_context=ctx, **kwargs)
        return select_targets(ds, output_names).repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


class _policy:
    """Temporarily switch Keras' global dtype policy."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.saved = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.saved)


def float32_copy(model, model_cfg: ModelConfig):
    """The same network built in float32 outside any strategy, with ``model``'s weights: exports
    run at full precision on any device (bfloat16 is slow without native support)."""
    with _policy("float32"):
        clone = build_model(model_cfg)
    clone.set_weights(model.get_weights())
    return clone


def export_metadata(cfg: TrainConfig, model_cfg: ModelConfig, precision: str, manifest: dict,
                    pp_cfg, history: dict) -> dict:
    return {
        "postprocess": pp_cfg.to_dict(),
        "arch": model_cfg.arch,
        "model": model_cfg.to_dict(),
        "image_head": has_image_head(model_cfg),
        "precision": precision,
        "export_precision": "float32",
        "loss": cfg.loss,
        "counts": manifest.get("counts", {}),
        "best": history,
    }


def run(cfg: TrainConfig, strategy=None) -> dict:
    """Train, keep the best weights, export. Returns a summary dict (also what tests check)."""
    strategy = strategy or make_strategy(cfg.strategy)  # first: MultiWorkerMirroredStrategy needs that
    keras.utils.set_random_seed(cfg.seed)
    manifest = data.read_manifest(cfg.data_dir)
    image_size = int(manifest["image_size"])
    if image_size <= 0:
        raise ValueError(f"{cfg.data_dir}: records have native sizes; training needs preprocessing.main --image_size")
    model_cfg = replace(cfg.model, image_size=image_size)
    precision = resolve_precision(cfg.precision)
    out_dir = work_dir(cfg.model_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)

    n_train = data.num_examples(cfg.data_dir, "train")
    n_val = data.num_examples(cfg.data_dir, "val")
    steps = cfg.steps_per_epoch or max(1, n_train // cfg.batch_size)
    val_steps = max(1, math.ceil(n_val / cfg.batch_size))
    head = has_image_head(model_cfg)
    pp_cfg = postprocess_config(head)
    shape = ("the seed notebook's network" if model_cfg.arch == "seed" else
             f"width {model_cfg.width}, depth {model_cfg.depth}, self_correlation {model_cfg.self_correlation}, "
             f"image_head {head}")
    print(f"training {model_cfg.arch} ({shape}) at {image_size} px on "
          f"{n_train} train / {n_val} val images; {strategy.num_replicas_in_sync} replica(s) "
          f"({type(strategy).__name__}), {precision}, loss {cfg.loss}, global batch {cfg.batch_size}, "
          f"{steps} steps/epoch", flush=True)

    with strategy.scope(), _policy(precision):  # layers take the policy when built
        model = build_model(model_cfg)
        compile_model(model, cfg, head)
    train_ds = _repeated(strategy, cfg, "train", True, model.output_names)
    val_ds = _repeated(strategy, cfg, "val", False, model.output_names)
    val_ids = data.make_dataset(cfg.data_dir, "val", cfg.batch_size, training=False, with_ids=True)
    callbacks = make_callbacks(cfg, out_dir, strategy, val_ids, pp_cfg, steps * cfg.batch_size)

    hist = model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, validation_data=val_ds,
                     validation_steps=val_steps, callbacks=callbacks, verbose=cfg.verbose)

    best_path = os.path.join(out_dir, BEST_WEIGHTS)
    if os.path.exists(best_path):
        model.load_weights(best_path)
    best = best_logged(os.path.join(out_dir, CSV_LOG), cfg.monitor, monitor_mode(cfg.monitor))
    result = {"model_dir": cfg.model_dir, "epochs_run": len(hist.history.get("loss", [])), "best": best,
              "precision": precision,
              "replicas": strategy.num_replicas_in_sync, "image_size": image_size, "model": model_cfg.to_dict(),
              "model_obj": model}
    if cfg.export and is_chief(strategy):
        clone = float32_copy(model, model_cfg)
        export_dir = os.path.join(cfg.model_dir, "export")
        export.export_model(clone, export_dir, image_size,
                            export_metadata(cfg, model_cfg, precision, manifest, pp_cfg, best))
        result.update(export_dir=export_dir, export_model=clone)
        print(f"exported {export_dir}", flush=True)
    return result

