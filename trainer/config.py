"""What a training run is made of: ``ModelConfig`` (the network's shape) and ``TrainConfig`` (the run).

Each field is the single source of its default, its allowed values and its help text:
``trainer.main`` derives its flags from these classes (``preprocessing.cli.define_flags``), and a
run writes its resolved ``TrainConfig`` to ``MODEL_DIR/config.json`` (``save`` / ``load``), from
which it can be repeated. No TensorFlow here, so defining flags stays cheap.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from preprocessing.errors import UsageError
from preprocessing.hyperparams import HELP, option

ARCHS = ("unet", "seed")
LOSSES = ("bce_dice", "tversky", "dice", "focal", "bce")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
CONFIG_FILE = "config.json"  # the resolved TrainConfig, next to the checkpoints


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the network's shape (recorded in config.json and the export's metadata)."""

    image_size: int = option(256, "Model input size S; taken from the records' manifest.json.", flag=False)
    arch: str = option("unet", "unet: this project's dual-stream U-Net; seed: the notebook's tiny network.",
                       choices=ARCHS)
    width: int = option(32, "U-Net filters at full resolution (doubled per level).", lower=1)
    depth: int = option(4, "U-Net downsamplings.", lower=1)
    # Defaults chosen by validation oF1 in benchmarks/quality.py (docs/experiments.md).
    self_correlation: bool = option(True, "Self-correlation block on the bottleneck features.")
    image_head: bool = option(True, "Image-level forged/authentic head on the bottleneck (gates post-processing).")
    top_k: int = option(8, "Self-correlation: best matches kept per position.", flag=False)
    exclude_radius: int = option(1, "Self-correlation: ignore matches within this Chebyshev distance.", flag=False)
    # Encoder levels (stride 2**level) whose fused skip features also get a (centred) self-correlation;
    # levels >= depth do not exist and are skipped. Memory: (S / 2**level)**4 floats per image.
    correlation_levels: tuple = option((), "Encoder levels (stride 2**level, e.g. 2) whose features also get a "
                                       "self-correlation fed to the decoder (empty: bottleneck only).", item=int)
    # MatchField (trainer.layers): displacement-consistent patch matches of the image itself, resized into
    # every skip and the bottleneck; the only variant that beat "everything authentic" on CPU budgets.
    match_field: bool = option(True, "Displacement-consistent patch matches of the image itself fed to every "
                               "decoder scale and the bottleneck (trainer.layers.MatchField).")
    match_size: int = option(128, "Working resolution of the match field (its cost does not grow with S).", lower=24)
    # The matcher's evidence map (preprocessing.matching.evidence) as a third input stream: on, because
    # it scored best on validation in benchmarks/detectors.py (README, "Detectors").
    evidence: bool = option(True, "Feed the matcher's evidence map (computed at native resolution by the Beam "
                            "job and by serving) to the model as a third stream, fused at every scale (unet only).")
    # Keras' 0.99 leaves BatchNorm's inference statistics hundreds of steps behind; 0.9 (PyTorch's default)
    # tracks within tens of steps (tests/test_model.py).
    bn_momentum: float = option(0.9, "BatchNorm moving-average momentum.", lower=0.0, upper=1.0)

    def __post_init__(self):
        # The seed architecture is the notebook's network exactly: it has no evidence stream.
        if self.arch == "seed" and self.evidence:
            object.__setattr__(self, "evidence", False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults suit a GPU; on a CPU use e.g. width 8, depth 3, batch 8 and a time budget."""

    data_dir: str = option("", "Output directory of preprocessing.main (has manifest.json).")
    model_dir: str = option("", "Where checkpoints, logs, config.json and export/ go.")
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = option(50, "Maximum epochs (early stopping may end sooner).", lower=1)
    batch_size: int = option(16, HELP["batch_size"], lower=1)
    learning_rate: float = option(1e-3, "Adam's initial learning rate.", lower=0.0)
    loss: str = option("bce_dice", "Mask loss. tversky is the seed's (alpha 0.1, beta 0.9); it collapses to "
                       "all-forged.", choices=LOSSES)
    image_loss_weight: float = option(1.0, "Weight of the image-level head's BCE.", lower=0.0)
    precision: str = option("auto", "auto: mixed_float16 on tensor-core GPUs, mixed_bfloat16 on bf16 CPUs, else "
                            "float32.", choices=PRECISIONS)
    strategy: str = option("auto", "auto: multi_worker if TF_CONFIG is set, mirrored with several devices, else "
                           "one_device.", choices=STRATEGIES)
    cpu_replicas: int = option(0, "Split the CPU into N logical devices (to test the distributed path).", lower=0)
    data_service: str = option("", "tf.data service dispatcher (grpc://HOST:PORT, from python -m trainer.data_service) "
                               "whose workers run the training input pipeline; empty: this host runs it.")
    data_service_compression: bool = option(False, "Snappy-compress the batches the service sends: a third of the "
                                            "bytes on the network, but more of the trainer's CPU time to receive "
                                            "them (README: tf.data service).")
    data_service_timeout: float = option(60.0, "With --data_service: end the run (one line naming the dispatcher, "
                                         "the last finished epoch kept for a relaunch) once the dispatcher has not "
                                         "answered for this many seconds; TensorFlow would retry forever.",
                                         lower=1.0)
    max_minutes: float = option(0.0, "Stop cleanly after this many minutes (0: no limit).", lower=0.0)
    seed: int = option(42, HELP["seed"])
    steps_per_epoch: int = option(0, "Steps per epoch (0: one pass over the training split).", lower=0)
    forged_fraction: float = option(0.0, "Sample forged images with this probability (0: the natural mix).",
                                    lower=0.0, upper=0.99)
    monitor: str = option("val_of1", "Metric that picks the best checkpoint (exported at the end).")
    lr_patience: int = option(3, "Epochs without val_loss improvement before the learning rate halves.", lower=1)
    early_stopping_patience: int = option(5, "Epochs without val_loss improvement before training stops.", lower=1)
    # While BatchNorm statistics settle, val_loss is noisy and the first epoch can look best (a short run
    # then stops after 6 epochs having learnt nothing).
    early_stopping_start: int = option(10, "Epochs before early stopping may act.", lower=0)
    jpeg_augment: bool = option(True, "Random JPEG recompression of training images.")
    export: bool = option(True, "Export the SavedModel at the end (and delete the resume backup).", flag=False)
    verbose: int = option(0, "Keras' own progress besides this project's one line per epoch: 0 none, 1 a progress "
                             "bar, 2 Keras' per-epoch line with every metric.", choices=(0, 1, 2))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def reproducible_dict(self) -> dict:
        """What decides the trained model: everything but where it runs, where it is written and how it is shown."""
        d = self.to_dict()
        for key in ("model_dir", "verbose", "max_minutes", "cpu_replicas", "strategy", "data_service",
                    "data_service_compression", "data_service_timeout"):
            d.pop(key)
        return d


def from_dict(d: dict) -> TrainConfig:
    """A TrainConfig from ``to_dict``'s JSON (lists back to tuples; unknown keys refused by name)."""
    d = dict(d)
    model = dict(d.pop("model", {}))
    model["correlation_levels"] = tuple(model.get("correlation_levels", ()))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known) + sorted(f"model.{k}" for k in set(model) - {
        f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise UsageError(f"unknown configuration fields: {', '.join(unknown)}")
    return TrainConfig(**d, model=ModelConfig(**model))


def load(path: str) -> TrainConfig:
    """The TrainConfig saved in ``path`` (a config.json), with a clear error naming the file."""
    from preprocessing import fileio

    try:
        return from_dict(json.loads(fileio.read_text(path)))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such configuration file") from None
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a training configuration ({exc})") from exc


def to_json(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2) + "\n"
