"""Command-line plumbing shared by every entry point (``python -m preprocessing.main``, ``trainer.main``,
``serving.score``, ...): flags derived from config dataclasses, the flags several commands share,
one-line errors and quiet native logs.

Why: a default is written once, in the config dataclass that uses it (``preprocessing.hyperparams``'
``option(...)`` records its help text, allowed values and bounds), and ``define_flags`` turns the
dataclass into absl flags, so a flag can never drift from its config. Flags that several commands
share and that belong to no config (``--model_dir``, ``--overwrite``, ``--verbose_logs``) are defined here, once.

Nothing here imports TensorFlow: the commands define their flags, parse them, and only then
import the heavy libraries, after ``quiet_native_logs`` has decided what TensorFlow may print.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Optional

from absl import app, flags

from preprocessing import hyperparams
from preprocessing.errors import USAGE_EXIT, BadInput, UsageError

FLAGS = flags.FLAGS

def define_shared(name: str, flag_values=FLAGS) -> None:
    """Define a shared flag for a command that has no config dataclass holding it."""
    default, help_text = hyperparams.SHARED[name]
    flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)


def _is_config(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _flag_fields(cls):
    """(field, default) of every flag of ``cls``, nested config dataclasses flattened."""
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # a nested config: its fields are flags too
            nested = f.default_factory()
            if _is_config(nested):
                yield from _flag_fields(type(nested))
            continue
        if f.metadata.get("flag", False):
            yield f, f.default


def define_flags(cls, *, skip: tuple = (), required: tuple = (), flag_values=FLAGS) -> None:
    """Define one absl flag per ``option`` field of the dataclass ``cls`` (and of nested configs)."""
    for f, default in _flag_fields(cls):
        if f.name in skip:
            continue
        m = f.metadata
        kwargs = dict(flag_values=flag_values, required=f.name in required)
        if m["choices"]:
            flags.DEFINE_enum(f.name, str(default), [str(c) for c in m["choices"]], m["help"], **kwargs)
        elif isinstance(default, bool):
            flags.DEFINE_bool(f.name, default, m["help"], **kwargs)
        elif isinstance(default, int):
            flags.DEFINE_integer(f.name, default, m["help"], lower_bound=m["lower"], upper_bound=m["upper"], **kwargs)
        elif isinstance(default, float):
            flags.DEFINE_float(f.name, default, m["help"], lower_bound=m["lower"], upper_bound=m["upper"], **kwargs)
        elif isinstance(default, tuple):
            flags.DEFINE_list(f.name, [str(v) for v in default], m["help"], **kwargs)
        else:
            flags.DEFINE_string(f.name, default, m["help"], **kwargs)


def _convert(value, field: dataclasses.Field):
    """A parsed flag value in the type of the field (lists of strings -> tuples of ``item``, enum
    strings of an integer field -> int)."""
    default = field.default
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, str):
        return int(value)
    if isinstance(default, tuple):
        return tuple(field.metadata["item"](v) for v in value)
    return value


def from_flags(cls, flag_values=FLAGS, **fixed):
    """An instance of the dataclass ``cls`` from parsed flags; ``fixed`` values win (e.g. paths)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            kwargs[f.name] = fixed[f.name]
        elif f.default_factory is not dataclasses.MISSING and _is_config(f.default_factory()):
            kwargs[f.name] = from_flags(type(f.default_factory()), flag_values)
        elif f.metadata.get("flag", False) and f.name in flag_values:
            kwargs[f.name] = _convert(flag_values[f.name].value, f)
    return cls(**kwargs)


def define_override_flags(cls, *, default_from: str, flag_values=FLAGS) -> None:
    """Flags for the fields of ``cls`` that default to None, i.e. to the value ``default_from`` holds
    (e.g. an export's metadata.json); the field's bounds still apply to a given value."""
    for f, default in _flag_fields(cls):
        m = f.metadata
        help_text = f"{m['help']} (default: {default_from})"
        integer = isinstance(default, int) and not isinstance(default, bool)
        define = flags.DEFINE_integer if integer else flags.DEFINE_float
        define(f.name, None, help_text, lower_bound=m["lower"], upper_bound=m["upper"], flag_values=flag_values)


def overrides_from_flags(cls, flag_values=FLAGS) -> dict:
    """The ``define_override_flags`` flags that were given: {field: value}."""
    return {f.name: flag_values[f.name].value for f, _ in _flag_fields(cls)
            if f.name in flag_values and flag_values[f.name].value is not None}


# ----------------------------------------------------------------------------- shared flags

def define_model_dir(help: str = "MODEL_DIR (with export/) or the export directory itself.",
                     required: bool = True) -> None:
    flags.DEFINE_string("model_dir", None, help, required=required)


DEFAULT_WORKERS = os.cpu_count() or 1  # processes for the matcher: one image at a time each


def define_workers() -> None:
    flags.DEFINE_integer("workers", DEFAULT_WORKERS, "Processes for the matcher (one image at a time each; default: "
                         "the core count; never more than the images or the cores).", lower_bound=1)


def worker_count(requested: int, items: int) -> int:
    """The processes worth starting: never more than the items or the cores (each costs ~150 MB
    before it does anything; 1000 of them for 4 images only exhausts the machine)."""
    return max(1, min(requested, items, DEFAULT_WORKERS))


def define_overwrite() -> None:
    flags.DEFINE_bool("overwrite", False, "Replace this command's own output from an earlier run (only the "
                      "files it writes; anything else there is left alone). Without it an existing output "
                      "is refused.")


def define_verbose_logs() -> None:
    flags.DEFINE_bool("verbose_logs", False, "Show TensorFlow's native start-up and runtime log lines and full "
                      "Python tracebacks (hidden by default: they look like failures to a newcomer).")


# ----------------------------------------------------------------------------- running a command

OPENCV_LOG_ERROR = 2  # cv::utils::logging::LOG_LEVEL_ERROR
NATIVE_LOG_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: hide the C++ INFO/WARNING/ERROR start-up lines (CUDA stubs, oneDNN)


def quiet_native_logs(verbose: bool = False) -> None:
    """Decide what TensorFlow's C++ side prints, before it is imported. A value the user set wins."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", NATIVE_LOG_LEVEL)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # OpenCV's decoder warnings ("PNG input buffer is incomplete", libpng's iCCP notes): the file's
    # error record already says what is wrong with it, in one line that names it.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if hasattr(sys.modules.get("cv2"), "setLogLevel"):  # already loaded: the variable is read at import
        sys.modules["cv2"].setLogLevel(OPENCV_LOG_ERROR)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().addFilter(_drop_known_noise)


# Start-up warnings of libraries that say nothing about the user's run (Beam without its GCP extras).
KNOWN_NOISE = ("apitools not found, and bigquery client libraries are not available",)


def _drop_known_noise(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in KNOWN_NOISE)


# What a user can fix, or what the machine lacks (a full disk, a port in use): printed as one line naming
# the flag, the path, the file or the port, exit status 2. ``ValueError`` is not among them: code raises
# ``UsageError`` / ``BadInput`` for those, and any other exception is a bug (``internal_error_lines``).
USER_ERRORS = (UsageError, BadInput, OSError)
# TensorFlow's errors that say the environment refused (a path on a file system it cannot reach, a missing
# file, no permission, a service that does not answer), not that the code is wrong: by class name, so this
# module need not import TensorFlow.
TF_ENVIRONMENT_ERRORS = ("NotFoundError", "AlreadyExistsError", "PermissionDeniedError", "UnauthenticatedError",
                         "UnavailableError", "UnimplementedError", "DeadlineExceededError", "ResourceExhaustedError")
INTERNAL_EXIT = 1  # a bug: as an uncaught exception would exit; user and environment errors: USAGE_EXIT


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, USER_ERRORS):
        return True
    tf = sys.modules.get("tensorflow")
    return (tf is not None and isinstance(exc, tf.errors.OpError)
            and type(exc).__name__ in TF_ENVIRONMENT_ERRORS)


def user_error_line(exc: BaseException) -> str:
    """One line: the message (naming the path for an OSError that carries one; TensorFlow's first line)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"error: {exc.filename}: {exc.strerror}"
    message = getattr(exc, "message", None) or str(exc)
    return f"error: {message.strip().splitlines()[0] if message.strip() else type(exc).__name__}"


def internal_error_lines(exc: BaseException, verbose: bool) -> str:
    """What a bug prints: that it is one, and where its traceback is (on screen with --verbose_logs, else
    in a log file, so the one-line user errors stay distinguishable from it)."""
    import tempfile

    head = f"internal error (a bug in copymove, not a problem with your input): {type(exc).__name__}: {exc}"
    text = "".join(traceback.format_exception(exc))
    if verbose:
        return text + head + "\n"
    try:
        with tempfile.NamedTemporaryFile("w", prefix="copymove-error-", suffix=".log", delete=False) as f:
            f.write(text)
        where = f"traceback in {f.name}"
    except OSError:
        where = "rerun with --verbose_logs for the traceback"
    return f"{head.splitlines()[0]}\n{where}; please report it with the command line\n"


HELP_FLAGS = ("help", "helpshort", "h", "?")  # absl's short help, plus the -h every user tries first
FULL_HELP_FLAGS = ("helpfull",)
PACKAGES = ("preprocessing", "trainer", "serving")  # flags defined here are the command's own


def _requested_help(argv: list[str]) -> Optional[str]:
    """"short" or "full" when the arguments (before a ``--``) ask for help, else None."""
    for arg in argv[1:]:
        if arg == "--":
            return None
        name = arg.lstrip("-").split("=")[0] if arg.startswith("-") else ""
        if name in HELP_FLAGS:
            return "short"
        if name in FULL_HELP_FLAGS:
            return "full"
    return None


def _own_flags(flag_values=FLAGS) -> list:
    """The flags this project's modules defined (the command's own and the shared ones it uses),
    not absl's or a library's."""
    main_module = sys.argv[0]
    return [flag for module, module_flags in flag_values.flags_by_module_dict().items()
            if module == main_module or module.split(".")[0] in PACKAGES for flag in module_flags]


def print_help(full: bool = False, flag_values=FLAGS) -> None:
    """The command's docstring and its flags (``--helpfull``: every flag, absl's and libraries' too).

    absl's ``--help`` lists only the flags defined in the ``__main__`` module itself, so flags derived
    from config dataclasses (defined here) or shared with another command were hidden: every flag a
    project module defined is made a key flag of the main module first."""
    main_module = sys.argv[0]
    for flag in _own_flags(flag_values):
        flag_values.register_key_flag_for_module(main_module, flag)
    if full:
        app.usage(writeto_stdout=True)
        return
    doc = (sys.modules["__main__"].__doc__ or "").rstrip()
    listing = [line for line in flag_values.module_help(main_module).splitlines()
               if line.strip() and line.strip() != f"{main_module}:"]  # absl heads the list with a file path
    print(f"{doc}\n\nflags:\n" + "\n".join(listing))
    print("\nTry --helpfull to get a list of all flags (absl's and the libraries' too).")


def _parser(flags_parser: Optional[Callable]) -> Callable:
    """The command's flag parser with help that exits 0 and flag errors as one line, exit status 2."""
    def parse(argv: list[str]) -> list[str]:
        wanted = _requested_help(argv)
        if wanted:
            try:
                print_help(full=wanted == "full")
                sys.stdout.flush()
            except BrokenPipeError:  # ``--help | head``: the reader has what it wanted
                sys.stdout = open(os.devnull, "w")
            sys.exit(0)
        try:
            return flags_parser(argv) if flags_parser else FLAGS(argv)
        except flags.Error as exc:
            message = " ".join(str(exc).split())
            sys.stderr.write(f"error: {message} (--help lists this command's flags)\n")
            sys.exit(USAGE_EXIT)
    return parse


def run(main: Callable, flags_parser: Optional[Callable] = None) -> None:
    """``absl.app.run(main)`` with the shared ``--verbose_logs`` flag, help that lists the command's
    flags and exits 0, one-line user errors (exit status 2) and internal errors that say they are bugs.

    The command's ``main`` must import TensorFlow (directly or through the libraries it calls)
    only inside itself, so that ``quiet_native_logs`` runs first. ``flags_parser`` (e.g. one that
    leaves unknown flags to Beam) may raise ``flags.Error``; it is reported here.
    """
    if "verbose_logs" not in FLAGS:
        define_verbose_logs()

    def wrapped(argv):
        verbose = FLAGS.verbose_logs
        quiet_native_logs(verbose)
        try:
            return main(argv)
        except Exception as exc:  # noqa: BLE001  (sorted into user and internal errors right here)
            if not is_user_error(exc):
                sys.stderr.write(internal_error_lines(exc, verbose))
                return INTERNAL_EXIT
            if verbose:
                traceback.print_exc()
            sys.stderr.write(user_error_line(exc) + "\n")
            return USAGE_EXIT

    app.run(wrapped, flags_parser=_parser(flags_parser))


def settings_text(settings: dict) -> str:
    """A config's values for the console: ``threshold 0.45, min_area 32`` (floats to 4 significant
    digits), not a dict dump; the exact values are in the files the command reads or writes."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items())


def command_line(module: str, argv: Optional[list] = None) -> list[str]:
    """The command as a user would paste it: ``python -m module args...`` (for manifests and logs)."""
    return ["python", "-m", module] + list(sys.argv[1:] if argv is None else argv)
