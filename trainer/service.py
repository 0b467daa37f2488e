"""tf.data service: the training input pipeline runs on a cluster of CPU machines, not on the trainer's host.

    python -m trainer.data_service --port 5050                           # the dispatcher (one)
    python -m trainer.data_service --port 5051 --dispatcher HOST:5050    # a worker (one per CPU host)
    python -m trainer.main ... --data_service grpc://HOST:5050           # the trainer(s)

What moves: ``trainer.data.make_dataset`` for the training split (reading, parsing, decoding,
shuffling, batching at the per-replica size, JPEG recompression) runs on the workers, and the
trainer receives finished batches; the on-device steps (``trainer.model.device_batch``: upscale,
flips, casts) are unchanged. Validation stays local: one small, JPEG-free pass per epoch, read in
file order like the oF1 callback's copy of it.

Processing mode: ``distributed_epoch`` (``ShardingPolicy.DYNAMIC``). The dispatcher hands the record
files to the workers one at a time, so every record is read, decoded and augmented by one worker per
epoch, and a fast worker simply takes more files. ``parallel_epochs`` would run the whole pipeline on
every worker: with the run's fixed ``--seed`` every worker then shuffles and augments alike, and the
trainer receives each batch once per worker (tests/test_data_service.py shows both), while the
reading is multiplied instead of divided.

RAM cache: off on the workers (``make_dataset(cache=False)``). A worker's share of the files changes
from epoch to epoch, so a cache of its first epoch would replay that share forever (and with this
pipeline, TF 2.17 delivered no batch within a minute from a cache under ``distributed_epoch``). Workers
decode every epoch.

What it costs is measured by benchmarks/input_pipeline.py (rows ``tfdata_raw_service*``; the latest
figures and how to size a cluster from them are in the README): a worker spends more CPU per image
than the local uncached pipeline (it also sends), and the trainer still pays to receive each batch.
Batches go uncompressed by default (TF's default is snappy): an image is S*S*4 bytes (262 KB at
256 px); ``--data_service_compression`` sends about a third of that, but receiving then costs the
trainer about as much as making the batch from its own RAM cache.

Determinism: the seed still fixes the model's initialisation and each worker's shuffling and JPEG
choices, but which worker reads which file, and the order in which the trainer receives their
batches, depend on timing: a run through the service is not repeatable batch for batch.

Several trainer processes (``MultiWorkerMirroredStrategy``) share one job: each registers the same,
unsharded dataset under ``job_name(cfg)`` (the same on every trainer of a run), and the dispatcher's
dynamic split replaces the per-trainer file sharding of the local pipeline. Each batch goes to one
trainer, first come first served; coordinated reads (``consumer_index``) are not needed because all
batches have one shape. Runs that share a cluster get different job names.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time

import tensorflow as tf

from preprocessing.errors import USAGE_EXIT, UsageError

PROCESSING_MODE = "distributed_epoch"
MAX_PORT = 65535  # the largest TCP port
CONNECT_TIMEOUT_S = 10.0  # how long a trainer or a starting worker waits for the dispatcher to answer
_GET_VERSION = "/tensorflow.data.DispatcherService/GetVersion"  # the cheapest RPC every dispatcher serves


def address(service: str, flag: str = "--data_service") -> str:
    """HOST:PORT of a dispatcher given as ``grpc://HOST:PORT`` or ``HOST:PORT``."""
    protocol, sep, addr = service.rpartition("://")
    host, _, port = addr.rpartition(":")
    if (sep and protocol != "grpc") or not host or not port.isdigit():
        raise UsageError(f"{flag} {service}: expected grpc://HOST:PORT (the dispatcher's address)")
    if not 1 <= int(port) <= MAX_PORT:  # else the hint below would suggest a port no server can take
        raise UsageError(f"{flag} {service}: port {port} is not a TCP port (1 to {MAX_PORT})")
    return addr


def _ask_dispatcher(addr: str, timeout: float):
    """None if a tf.data dispatcher at HOST:PORT ``addr`` answers within ``timeout`` seconds, else the
    gRPC status code of the failure."""
    import grpc  # a dependency of TensorFlow

    with grpc.insecure_channel(addr) as channel:
        get_version = channel.unary_unary(_GET_VERSION, request_serializer=bytes, response_deserializer=bytes)
        try:
            get_version(b"", timeout=timeout, wait_for_ready=True)
            return None
        except grpc.RpcError as exc:
            return exc.code()


def check_dispatcher(service: str, flag: str = "--data_service", timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a one-line UsageError naming ``service`` unless a tf.data dispatcher answers there within
    ``timeout`` seconds. (TF's own client retries registering a dataset forever, silently.)"""
    import grpc

    addr = address(service, flag)
    code = _ask_dispatcher(addr, timeout)
    if code is None:
        return
    if code == grpc.StatusCode.UNIMPLEMENTED:
        what = "answers, but is not a tf.data service dispatcher (a worker's port?)"
    else:
        what = f"no tf.data service dispatcher answered within {timeout:g} s ({code.name.lower()})"
    raise UsageError(f"{flag} {service}: {what}; start one there with `python -m trainer.data_service "
                     f"--port {addr.rpartition(':')[2]}`")


PROBE_EVERY_S = 2.0  # how often a training run asks its dispatcher whether it is still there
LOST_EXIT = USAGE_EXIT  # the exit status of a run ended because its dispatcher went away (an environment error)


@contextlib.contextmanager
def dispatcher_watch(service: str, timeout: float, model_dir: str):
    """While the block runs, a thread asks the dispatcher at ``service`` for its version every
    ``PROBE_EVERY_S``; once it has not answered for ``timeout`` seconds, the thread prints one line naming
    the address and ends the process (exit status ``LOST_EXIT``). So a run whose dispatcher dies ends
    within ``timeout + 2 * PROBE_EVERY_S`` seconds instead of hanging: TensorFlow's client retries forever
    inside a C++ call the main thread cannot leave, so nothing gentler than ending the process can stop
    it. The run is then as after a kill: the last finished epoch is in ``model_dir``, and relaunching the
    same command resumes from it."""
    addr = address(service)
    stopped = threading.Event()

    def watch():
        answered = time.monotonic()
        while not stopped.wait(PROBE_EVERY_S):
            if _ask_dispatcher(addr, PROBE_EVERY_S) is None:
                answered = time.monotonic()
            elif time.monotonic() - answered >= timeout and not stopped.is_set():
                sys.stderr.write(
                    f"error: --data_service {service}: the tf.data service dispatcher has not answered for "
                    f"{timeout:g} s (--data_service_timeout); training stopped. The last finished epoch is kept "
                    f"in {model_dir}: restart the dispatcher and its workers, then relaunch the same command to "
                    "resume from it\n")
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(LOST_EXIT)

    thread = threading.Thread(target=watch, daemon=True, name="dispatcher-watch")
    thread.start()
    try:
        yield
    finally:
        stopped.set()


def _port_refused(port: int, why: str) -> UsageError:
    return UsageError(f"--port {port}: cannot listen on this port ({why}); choose another, or 0 for any free port")


def _listening(start, port: int):
    """``start()`` (a server listening on ``port``), refused in one line naming the port when the port is
    taken: probed first (gRPC's own failure prints a page of JSON from C++ before TensorFlow's bare
    "Could not start gRPC server"; gRPC's SO_REUSEPORT would even let two servers share a port)."""
    import socket

    if port:
        try:
            with socket.socket() as probe:
                probe.bind(("", port))
        except OSError as exc:
            raise _port_refused(port, exc.strerror or str(exc)) from exc
    try:
        return start()
    except RuntimeError as exc:
        if "Could not start gRPC server" not in str(exc):
            raise
        raise _port_refused(port, "in use by another process, or not allowed") from exc


def start_dispatcher(port: int = 0) -> tf.data.experimental.service.DispatchServer:
    """A running dispatcher on ``port`` (0: any free port; ``server.target`` is ``grpc://localhost:PORT``)."""
    config = tf.data.experimental.service.DispatcherConfig(port=port)
    return _listening(lambda: tf.data.experimental.service.DispatchServer(config), port)


def start_worker(dispatcher: str, port: int = 0, host: str = "localhost") -> tf.data.experimental.service.WorkerServer:
    """A running worker on ``port``, registered with ``dispatcher`` (HOST:PORT or grpc://HOST:PORT) as
    ``host:PORT``: the name trainers connect to, so on a cluster it must be this machine's reachable name."""
    check_dispatcher(dispatcher, flag="--dispatcher")
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=address(dispatcher, "--dispatcher"),
                                                       worker_address=f"{host}:%port%", port=port)
    return _listening(lambda: tf.data.experimental.service.WorkerServer(config), port)


def job_name(cfg) -> str:
    """The job every trainer process of the run ``cfg`` (a TrainConfig) reads from: the same for all of
    them, different for another run (or configuration) on the same cluster."""
    from trainer.config import to_json

    return "copymove-train-" + hashlib.sha256(to_json(cfg).encode()).hexdigest()[:16]


def whole_dataset(ctx: tf.distribute.InputContext) -> tf.distribute.InputContext:
    """``ctx`` as one input pipeline: per-replica batches as before, but no per-trainer sharding (the
    dispatcher splits the files across the trainers that share the job)."""
    return tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                      num_replicas_in_sync=ctx.num_replicas_in_sync)


def distribute(dataset: tf.data.Dataset, service: str, job: str | None = None,
               compress: bool = False) -> tf.data.Dataset:
    """``dataset`` produced by the tf.data service at ``service`` (everything before this call runs on
    the workers); ``job``: a job name shared by several consumers (None: a job of its own);
    ``compress``: snappy-compress the elements on the workers (TF's default; see the module's
    docstring for why it is not ours)."""
    return dataset.apply(tf.data.experimental.service.distribute(PROCESSING_MODE, service, job_name=job,
                                                                 compression="AUTO" if compress else None))
