"""Where a run executes: logical CPU devices, the mixed-precision policy, the tf.distribute strategy,
and which worker writes the run's files."""
from __future__ import annotations

import os

import tensorflow as tf

from preprocessing.errors import UsageError
from trainer.config import PRECISIONS, STRATEGIES

WORKERS_DIR = "workers"  # where non-chief workers write their (identical) files


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
        raise UsageError(f"unknown precision {name!r}; expected one of {PRECISIONS}")
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
        raise UsageError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
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
    return os.path.join(model_dir, WORKERS_DIR, f"{r.task_type}_{r.task_id}")


def is_multi_worker(strategy) -> bool:
    """MultiWorkerMirroredStrategy over more than one worker process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, ())) for job in ("chief", "worker")) > 1
