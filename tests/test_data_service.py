"""tf.data service: a dispatcher and two workers in this process run the training input pipeline.

Training through them must really read from the workers (their task counts), the chosen processing
mode must read each record once where ``parallel_epochs`` repeats every batch per worker, trainers
sharing a run's job must split its batches, the command must start and stop, and an unreachable
dispatcher must fail in bounded time.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import math
import os
import select
import socket
import subprocess
import sys
import threading
import time

import keras
import pytest
import tensorflow as tf

from preprocessing import records as records_lib
from preprocessing.errors import UsageError
from trainer import data, run_state, service, train
from trainer.config import ModelConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stopping():
    """Threads stopping this module's servers in the background; joined when the module ends."""
    threads = []
    yield threads
    for thread in threads:
        thread.join()


@pytest.fixture
def cluster(stopping):
    """A dispatcher and two workers on localhost, in this process."""
    dispatcher = service.start_dispatcher()
    workers = [service.start_worker(dispatcher.target) for _ in range(2)]
    yield dispatcher, workers
    # In the background: a worker's stop() waits for each task's tf.data autotuner thread to wake up
    # (10-20 s here after a training run), and the next tests need not wait for it.
    stopping.append(threading.Thread(target=lambda: [server.stop() for server in workers + [dispatcher]]))
    stopping[-1].start()


class WorkerTasks(keras.callbacks.Callback):
    """Each service worker's number of tasks (jobs it is producing data for), after every epoch."""

    def __init__(self, workers):
        super().__init__()
        self.workers, self.seen = workers, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append([w._num_tasks() for w in self.workers])


def test_two_epochs_on_two_replicas_from_two_service_workers(records_dir, tmp_path, cluster, two_cpus):
    dispatcher, workers = cluster
    assert dispatcher._num_workers() == 2 and [w._num_tasks() for w in workers] == [0, 0]
    cfg = TrainConfig(data_dir=records_dir, model_dir=str(tmp_path / "m"), data_service=dispatcher.target,
                      model=ModelConfig(width=4, depth=2, self_correlation=False, match_field=False), epochs=2,
                      batch_size=4, steps_per_epoch=2, precision="float32", verbose=0, export=False)
    tasks = WorkerTasks(workers)
    result = train.run(cfg, strategy=two_cpus, callbacks=(tasks,))
    assert result.epochs_run == 2 and result.replicas == 2
    with open(os.path.join(cfg.model_dir, run_state.CSV_LOG)) as f:
        assert [math.isfinite(float(row["loss"])) for row in csv.DictReader(f)] == [True, True]
    # Both workers produced batches for the run during both epochs (a local pipeline gives them no task).
    # Two each: Keras pulls one batch from a first iterator to build the model, then trains from a second.
    assert tasks.seen == [[2, 2], [2, 2]]


def received_at_least(records_dir: str, batch_size: int) -> int:
    """Records of one epoch through two workers: each drops its last partial batch."""
    return records_lib.num_examples(records_dir, "train") - 2 * (batch_size - 1)


def batches(dataset) -> list[tuple[str, tuple]]:
    """(hash of the batch's pixels, its records' (case_id, label)) for every batch of ``dataset``."""
    out = []
    for inputs, targets, ids in dataset:
        keys = tuple(zip(ids["case_id"].numpy().tolist(), targets["image"].numpy()[:, 0].tolist()))
        out.append((hashlib.sha256(inputs["images"].numpy().tobytes()).hexdigest(), keys))
    return out


def test_distributed_epoch_reads_each_record_once_and_parallel_epochs_repeats_each_batch(records_dir, cluster):
    """One seeded training epoch: split across the two workers, every record arrives at most once
    (each worker drops its last partial batch); run whole on both (parallel_epochs), the workers
    shuffle and augment alike and every batch arrives twice."""
    dispatcher, _ = cluster
    epoch = data.make_dataset(records_dir, "train", 2, training=True, seed=42, with_ids=True, cache=False)
    split = batches(service.distribute(epoch, dispatcher.target))
    records = [key for _, keys in split for key in keys]
    assert len(set(records)) == len(records) >= received_at_least(records_dir, 2)
    both = batches(epoch.apply(tf.data.experimental.service.distribute("parallel_epochs", dispatcher.target)))
    assert set(collections.Counter(pixels for pixels, _ in both).values()) == {2}


def test_trainers_sharing_the_runs_job_receive_different_batches(records_dir, cluster):
    """Two trainer processes build the same unsharded dataset under one job name: the service splits
    one epoch between them instead of giving each its own copy."""
    dispatcher, _ = cluster
    ctx = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)
           for i in range(2)]
    trainers = [iter(service.distribute(data.make_dataset(records_dir, "train", 4, training=True, seed=42,
                                                          with_ids=True, cache=False,
                                                          input_context=service.whole_dataset(c)),
                                        dispatcher.target, job="run"))
                for c in ctx]
    received = [batches(trainer) for trainer in trainers]
    records = [key for got in received for _, keys in got for key in keys]
    assert len(set(records)) == len(records) >= received_at_least(records_dir, 2)  # per-replica batches of 2


def start(*args) -> tuple[subprocess.Popen, str]:
    """``python -m trainer.data_service ARGS`` and the first line it prints (within 60 s)."""
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-m", "trainer.data_service", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    return proc, proc.stdout.readline() if ready else ""


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def test_command_starts_a_dispatcher_and_a_worker_that_stop_when_terminated():
    port, worker_port = free_port(), free_port()
    dispatcher, line = start(f"--port={port}", "--host=localhost")
    try:
        assert f"dispatcher listening on grpc://localhost:{port}" in line, line
        assert f"--data_service grpc://localhost:{port}" in line
        service.check_dispatcher(f"grpc://localhost:{port}")  # answers as a dispatcher
        worker, line = start(f"--port={worker_port}", f"--dispatcher=localhost:{port}", "--host=localhost")
        try:
            assert f"worker listening on localhost:{worker_port}, registered with the dispatcher" in line, line
            with pytest.raises(UsageError, match="is not a tf.data service dispatcher"):
                service.check_dispatcher(f"localhost:{worker_port}")
        finally:
            assert stop(worker) == "stopped\n"
    finally:
        assert stop(dispatcher) == "stopped\n"


def test_an_unreachable_dispatcher_is_named_in_one_line_in_bounded_time(records_dir, tmp_path):
    address = f"grpc://localhost:{free_port()}"  # nothing listens there
    cfg = TrainConfig(data_dir=records_dir, model_dir=str(tmp_path / "m"), data_service=address,
                      model=ModelConfig(width=4, depth=2, self_correlation=False, match_field=False), epochs=1,
                      batch_size=4, steps_per_epoch=1, precision="float32", verbose=0, export=False)
    start_time = time.monotonic()
    with pytest.raises(UsageError) as info:
        train.run(cfg, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert time.monotonic() - start_time < service.CONNECT_TIMEOUT_S + 20
    message = str(info.value)
    assert message.startswith(f"--data_service {address}: no tf.data service dispatcher answered within")
    assert "\n" not in message
    with pytest.raises(UsageError, match="expected grpc://HOST:PORT"):
        service.address("localhost")


def test_a_port_in_use_is_named_in_one_line():
    """Before: ``RuntimeError: Could not start gRPC server`` after a page of gRPC's JSON."""
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "trainer.data_service", f"--port={port}"], cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=""), capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"error: --port {port}: cannot listen on this port (Address "
                                                    "already in use); choose another, or 0 for any free port")
    assert "Traceback" not in proc.stderr and "gRPC" not in proc.stderr


LOST_AFTER_S = 3  # the test run's --data_service_timeout


def test_a_dispatcher_killed_mid_training_ends_the_run_in_bounded_time_with_its_epochs_kept(records_dir, tmp_path):
    """A real dispatcher and worker (``trainer.data_service``), a real ``trainer.main``; the dispatcher
    gets SIGKILL after the first finished epoch. Before: "Failed to heartbeat" every second, forever."""
    port, worker_port = free_port(), free_port()
    dispatcher, line = start(f"--port={port}", "--host=localhost")
    worker, _ = start(f"--port={worker_port}", f"--dispatcher=localhost:{port}", "--host=localhost")
    model_dir = tmp_path / "m"
    address = f"grpc://localhost:{port}"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", "--data_dir", records_dir, "--model_dir", str(model_dir),
         "--data_service", address, f"--data_service_timeout={LOST_AFTER_S}", "--width=4", "--depth=2",
         "--noself_correlation", "--nomatch_field", "--epochs=1000", "--batch_size=4", "--steps_per_epoch=2",
         "--precision=float32", "--verbose=0"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=""), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        log = model_dir / run_state.CSV_LOG
        deadline = time.monotonic() + 240
        while trainer.poll() is None and time.monotonic() < deadline and (
                not log.exists() or len(log.read_text().splitlines()) < 2):  # a header and a finished epoch
            time.sleep(0.2)
        assert trainer.poll() is None, trainer.communicate()[1][-3000:]
        dispatcher.kill()
        killed = time.monotonic()
        _, err = trainer.communicate(timeout=LOST_AFTER_S + 2 * service.PROBE_EVERY_S + 60)
        took = time.monotonic() - killed
    finally:
        for proc in (trainer, dispatcher, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert trainer.returncode == service.LOST_EXIT
    assert took < LOST_AFTER_S + 2 * service.PROBE_EVERY_S + 20  # the bound, plus this shared machine's slack
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: --data_service {address}: the tf.data service dispatcher has not answered "
                           f"for {LOST_AFTER_S} s"), err[-3000:]
    assert str(model_dir) in last
    # Left as a kill leaves it, which a relaunch resumes (tests/test_train.py): training, epochs logged, a backup.
    assert run_state.read_state(str(model_dir)) == run_state.TRAINING
    assert len(log.read_text().splitlines()) >= 2
    # What the relaunch reads first: a readable backup, or (the exit came while Keras was writing one) the
    # torn file named and the previous good state taken, as after any kill (tests/test_train.py).
    resume = run_state.prepare_backup(str(model_dir))
    assert resume.epoch >= 1, resume.note
    assert (resume.note.startswith(f"resuming after epoch {resume.epoch}")
            or f"resuming from the previous state (after epoch {resume.epoch})" in resume.note), resume.note
