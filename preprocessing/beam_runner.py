"""Which Beam runner a job uses when the user names none: shared by the preprocessing and scoring jobs."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

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
