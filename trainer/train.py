"""The training run behind ``python -m trainer.main``: build, fit, keep the best weights, export.

``run(cfg)`` is the whole run and returns a ``TrainResult``; ``trainer.main`` only turns flags into
a ``TrainConfig``. Where it runs (devices, precision, strategy) is ``trainer.distribute``; the
callbacks are ``trainer.callbacks``; what survives a kill is ``trainer.run_state``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import Optional

import keras
import tensorflow as tf

from preprocessing import fileio, records
from preprocessing.errors import UsageError
from preprocessing.progress import heartbeat
from trainer import data, export, losses, run_state, service
from trainer.callbacks import best_logged, make_callbacks, monitor_mode
from trainer.config import ModelConfig, TrainConfig
from trainer.distribute import is_chief, make_strategy, resolve_precision, work_dir
from trainer.model import build_model, has_image_head, select_targets
from trainer.validation import postprocess_config


@dataclass
class TrainResult:
    """What a run did (``summary()`` is JSON) and, for the caller, the live models."""

    model_dir: str
    stage: str  # run_state stage at the end: "exported", or "trained" without export
    epochs_run: int  # epochs trained by this launch (0 when a finished run was relaunched)
    best: dict  # the best epoch's log row
    precision: str
    replicas: int
    image_size: int
    model_config: dict
    export_dir: Optional[str] = None
    notes: list = field(default_factory=list)
    model: Optional[keras.Model] = field(default=None, repr=False)  # the trained model (None if nothing ran)
    export_model: Optional[keras.Model] = field(default=None, repr=False)  # its float32 copy that was exported

    def summary(self) -> dict:
        keys = ("model_dir", "stage", "epochs_run", "best", "precision", "replicas", "image_size", "export_dir",
                "notes")
        return {"model": self.model_config, **{k: getattr(self, k) for k in keys}}


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
    same number of steps even when their shards differ in size. With ``cfg.data_service`` the
    training batches come from the tf.data service (``trainer.service``); validation stays local."""
    kwargs = dict(seed=cfg.seed if training else None, evidence=cfg.model.evidence)
    if training:
        kwargs.update(forged_fraction=cfg.forged_fraction or None, augment_jpeg=cfg.jpeg_augment)
    remote = training and bool(cfg.data_service)
    if remote:
        kwargs.update(cache=False)  # a worker's share of the files changes every epoch
    job = service.job_name(cfg) if remote else None

    def finish(ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = select_targets(ds, output_names).repeat()
        return service.distribute(ds, cfg.data_service, job, cfg.data_service_compression) if remote else ds

    return data.distributed_dataset(strategy, cfg.data_dir, split, cfg.batch_size, training,
                                    context=service.whole_dataset if remote else None, then=finish, **kwargs)


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


def check_data(cfg: TrainConfig, counts: dict, replicas: int, has_evidence: bool = True) -> None:
    """Refuse, before anything is built, splits that would fail after an epoch of work, and records
    without the evidence maps an evidence model would learn from (it would see zeros only)."""
    train_n, val_n = counts["train"], counts["val"]
    if train_n == 0:
        raise UsageError(f"{cfg.data_dir}: the train split has no records; run preprocessing.main on a corpus "
                         "with training images")
    if train_n < cfg.batch_size:
        raise UsageError(f"{cfg.data_dir}: the train split has {train_n} records, fewer than --batch_size "
                         f"{cfg.batch_size} (training drops incomplete batches): lower --batch_size or add data")
    if val_n == 0:
        raise UsageError(f"{cfg.data_dir}: the val split is empty, and validation picks the checkpoint to export: "
                         "rerun preprocessing.main with a larger --val_fraction or on more cases")
    if cfg.batch_size < replicas:
        raise UsageError(f"--batch_size {cfg.batch_size} is smaller than the {replicas} replicas: each replica "
                         "needs at least one image per step")
    if cfg.model.evidence and not has_evidence:
        raise UsageError(f"{cfg.data_dir}: these records carry no evidence maps (preprocessing.main --noevidence, "
                         "or schema version 2), and --evidence (the default) trains on them: rerun "
                         "preprocessing.main with --evidence, or train with --noevidence")


def _fit(model, cfg: TrainConfig, **kwargs):
    """``model.fit``; a damaged shard (which TF reports without its file name) is named."""
    try:
        return model.fit(shuffle=False, **kwargs)  # the tf.data pipeline shuffles; Keras would only warn
    except tf.errors.DataLossError as exc:
        sources = [records.resolve_source(cfg.data_dir, split) for split in ("train", "val")]
        raise records.damaged_records_error(sources, exc) from exc


def _finished(cfg: TrainConfig, model_cfg: ModelConfig, precision: str, replicas: int) -> TrainResult:
    export_dir = fileio.join(cfg.model_dir, run_state.EXPORT_DIR)
    print(f"{cfg.model_dir}: this run is finished and exported ({export_dir}); nothing to do. Train again with "
          "a new --model_dir.", flush=True)
    best = best_logged(fileio.join(cfg.model_dir, run_state.CSV_LOG), cfg.monitor, monitor_mode(cfg.monitor))
    return TrainResult(cfg.model_dir, run_state.EXPORTED, 0, best, precision, replicas, model_cfg.image_size,
                       model_cfg.to_dict(), export_dir, notes=["already finished"])


def run(cfg: TrainConfig, strategy=None, callbacks: tuple = ()) -> TrainResult:
    """Train, keep the best weights, export; or finish what a killed launch of the same run left.

    ``callbacks`` are appended to the run's own (tests inject kills there; not a flag)."""
    strategy = strategy or make_strategy(cfg.strategy)  # first: MultiWorkerMirroredStrategy needs that
    keras.utils.set_random_seed(cfg.seed)
    manifest = records.read_manifest(cfg.data_dir)
    image_size = int(manifest["image_size"])
    if image_size <= 0:
        raise UsageError(f"{cfg.data_dir}: records have native sizes; training needs preprocessing.main --image_size")
    model_cfg = replace(cfg.model, image_size=image_size)
    cfg = replace(cfg, model=model_cfg)  # the resolved configuration, as config.json records it
    precision = resolve_precision(cfg.precision)
    replicas = strategy.num_replicas_in_sync
    counts = {s: records.num_examples(cfg.data_dir, s) for s in ("train", "val")}
    check_data(cfg, counts, replicas, has_evidence=bool(manifest.get("evidence")))
    if cfg.data_service:
        service.check_dispatcher(cfg.data_service)  # a clear error before any work, not a silent retry loop
    chief = is_chief(strategy)
    if chief:
        run_state.check_model_dir(cfg)
    stage = run_state.read_state(cfg.model_dir)
    if stage == run_state.EXPORTED:
        return _finished(cfg, model_cfg, precision, replicas)
    out_dir = work_dir(cfg.model_dir, strategy)
    fileio.makedirs(out_dir)
    if chief:
        run_state.save_config(cfg)

    steps = cfg.steps_per_epoch or max(1, counts["train"] // cfg.batch_size)
    val_steps = max(1, math.ceil(counts["val"] / cfg.batch_size))
    head = has_image_head(model_cfg)
    pp_cfg = postprocess_config(head)
    shape = ("the seed notebook's network" if model_cfg.arch == "seed" else
             f"width {model_cfg.width}, depth {model_cfg.depth}, self_correlation {model_cfg.self_correlation}, "
             f"image_head {head}, evidence {model_cfg.evidence}")
    print(f"training {model_cfg.arch} ({shape}) at {image_size} px on {counts['train']} train / {counts['val']} "
          f"val images; {replicas} replica(s) ({type(strategy).__name__}), {precision}, loss {cfg.loss}, global "
          f"batch {cfg.batch_size}, {steps} steps/epoch", flush=True)

    with strategy.scope(), _policy(precision):  # layers take the policy when built
        model = build_model(model_cfg)
        compile_model(model, cfg, head)
    notes, epochs_run = [], 0
    csv_path = fileio.join(out_dir, run_state.CSV_LOG)
    if stage == run_state.TRAINED:
        notes.append("training had finished in an earlier launch: exporting its best weights")
        print(notes[-1], flush=True)
    else:
        resume = run_state.prepare_backup(out_dir)
        if resume.note:
            notes.append(resume.note)
        run_state.trim_log(csv_path, resume.epoch)
        run_state.check_best_weights(out_dir)
        if chief:
            run_state.write_state(cfg.model_dir, run_state.TRAINING)
        train_ds = _repeated(strategy, cfg, "train", True, model.output_names)
        val_ds = _repeated(strategy, cfg, "val", False, model.output_names)
        val_ids = data.make_dataset(cfg.data_dir, "val", cfg.batch_size, training=False, with_ids=True,
                                    evidence=cfg.model.evidence)
        all_callbacks = make_callbacks(cfg, out_dir, strategy, val_ids, pp_cfg, callbacks)
        watch = (service.dispatcher_watch(cfg.data_service, cfg.data_service_timeout, cfg.model_dir)
                 if cfg.data_service else contextlib.nullcontext())
        with watch:
            hist = _fit(model, cfg, x=train_ds, epochs=cfg.epochs, steps_per_epoch=steps, validation_data=val_ds,
                        validation_steps=val_steps, callbacks=all_callbacks, verbose=cfg.verbose)
        epochs_run = len(hist.history.get("loss", []))
        if chief:
            run_state.write_state(cfg.model_dir, run_state.TRAINED)

    best_path = fileio.join(out_dir, run_state.BEST_WEIGHTS)
    if fileio.exists(best_path):
        model.load_weights(best_path)
    best = best_logged(csv_path, cfg.monitor, monitor_mode(cfg.monitor))
    if best:
        print(f"best epoch {best['epoch']} by {cfg.monitor} ({best[cfg.monitor]:.4f}): its weights are the ones "
              "kept" + (" and exported" if cfg.export and chief else ""), flush=True)
    result = TrainResult(cfg.model_dir, run_state.TRAINED, epochs_run, best, precision, replicas, image_size,
                         model_cfg.to_dict(), notes=notes, model=model)
    if cfg.export and chief:
        clone = float32_copy(model, model_cfg)
        export_dir = fileio.join(cfg.model_dir, run_state.EXPORT_DIR)
        print(f"exporting the SavedModel to {export_dir} (tracing the model takes a while on a CPU)", flush=True)
        with heartbeat("export"):
            export.export_model(clone, export_dir, image_size,
                                export_metadata(cfg, model_cfg, precision, manifest, pp_cfg, best))
        run_state.write_state(cfg.model_dir, run_state.EXPORTED)
        run_state.remove_backup(out_dir)  # only now: a kill before this point resumes or re-exports
        result.stage, result.export_dir, result.export_model = run_state.EXPORTED, export_dir, clone
        print(f"exported {export_dir}", flush=True)
    return result
