"""Which Beam runner a job uses when the user names none, with how many local processes, and what
those processes may print: shared by the preprocessing and scoring jobs."""
from __future__ import annotations

import contextlib
import os
import sys
import threading

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from preprocessing.cli import DEFAULT_WORKERS

# Local worker processes (--direct_running_mode=multi_processing) log every channel they open at INFO
# and Beam's own start-up warnings; a newcomer reads them as failures. Errors still show.
QUIET_WORKER_LOG_LEVEL = "ERROR"


LOCAL_RUNNERS = (None, "DirectRunner", "direct", "Direct")  # no --runner, or Beam's local one


def runs_locally(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


def quiet_local_workers(pipeline_args: list[str], verbose: bool) -> list[str]:
    """``pipeline_args`` plus a quiet worker log level for local runs, unless the user asked for
    logs (``--verbose_logs``), set the level, or names a cluster runner (whose logs go to its console)."""
    if verbose or not runs_locally(PipelineOptions(pipeline_args)) or any(
            a.startswith("--default_sdk_harness_log_level") for a in pipeline_args):
        return list(pipeline_args)
    return list(pipeline_args) + [f"--default_sdk_harness_log_level={QUIET_WORKER_LOG_LEVEL}"]


LOCAL_PARALLELISM_FLAGS = ("--direct_running_mode", "--direct_num_workers")


def use_local_cores(pipeline_args: list[str], cores: int = DEFAULT_WORKERS) -> list[str]:
    """``pipeline_args`` plus one local worker process per core (``--direct_running_mode=multi_processing
    --direct_num_workers=<cores>``) for a local run on a machine with several cores; unchanged when the
    user set either option or names a cluster runner. Beam's own default is one process."""
    if cores <= 1 or not runs_locally(PipelineOptions(pipeline_args)) or any(
            a.split("=")[0] in LOCAL_PARALLELISM_FLAGS for a in pipeline_args):
        return list(pipeline_args)
    return list(pipeline_args) + ["--direct_running_mode=multi_processing", f"--direct_num_workers={cores}"]


# What Beam's local worker processes print on stderr before their log level applies (they inherit
# the command's stderr, so the command's own log filter never sees these lines).
WORKER_NOISE = (b"apitools not found, and bigquery client libraries are not available",
                b"Logging handler created.")


@contextlib.contextmanager
def quiet_worker_stderr(enabled: bool = True, noise: tuple = WORKER_NOISE):
    """While the block runs, lines written to this process's stderr file descriptor (and so by the
    worker processes it starts) that contain a ``noise`` text are dropped; the rest pass unchanged."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not any(text in line for text in noise):
                    try:
                        os.write(real, line)
                    except OSError:  # the block is over and a late worker line has nowhere to go
                        return

    thread = threading.Thread(target=pump, name="worker-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe closes once every worker holding it has exited
        thread.join(timeout=5)
        os.close(real)


def local_runner(options: PipelineOptions):
    """Beam's batch FnApiRunner when no cluster runner is named, else ``None`` (Beam picks from --runner).

    A bare DirectRunner first tries to download and start the Prism runner
    (which ignores ``--direct_running_mode``); the FnApiRunner is what it falls
    back to for batch jobs, and it honours ``--direct_running_mode=multi_processing
    --direct_num_workers=N``.
    """
    if not runs_locally(options):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)
