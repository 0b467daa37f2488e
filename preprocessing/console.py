"""The ``copymove`` command: one console script whose subcommands are the ``python -m`` entry points.

    copymove synth --output_dir data            # = python -m preprocessing.synth --output_dir data
    copymove score --input_dir imgs --help      # = python -m serving.score ... --help
    copymove --version

Each subcommand runs its module exactly as ``python -m`` does (``runpy``, by module name, at call
time), so the modules keep working on their own, and a subcommand imports only what its module
imports: ``copymove screen`` or ``copymove evaluate`` never loads TensorFlow. It lives in
``preprocessing`` (the layer everyone may import) because it names the other layers' modules only as
strings and imports none of them, which keeps the one-way layer rule (tests/test_architecture.py).
"""
from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from typing import Optional

from preprocessing.errors import USAGE_EXIT
from preprocessing.version import __version__

PROGRAM = "copymove"
# subcommand -> (the module ``python -m`` runs, what it does), in the order a user meets them
COMMANDS = {
    "synth": ("preprocessing.synth", "write a synthetic dataset (figures and photos, with masks)"),
    "preprocess": ("preprocessing.main", "Beam job: a labelled corpus -> TFRecords for training"),
    "report": ("preprocessing.report", "an HTML report on a dataset"),
    "train": ("trainer.main", "train the network and export it (SavedModel + metadata.json)"),
    "data-service": ("trainer.data_service", "a tf.data service dispatcher or worker for training"),
    "calibrate": ("serving.calibrate", "tune the detectors' decisions on validation data"),
    "score": ("serving.score", "a folder of images -> submission.csv (network, matcher or fused)"),
    "beam-score": ("serving.beam_score", "the same scoring as a Beam pipeline"),
    "screen": ("serving.screen", "screen a folder of images or a PDF for copied regions"),
    "evaluate": ("serving.evaluate", "score a submission against a solution with the competition oF1"),
    "submission-report": ("serving.report", "a dataset report with a submission scored on it"),
    "demo": ("serving.demo", "the end-to-end demo on built-in data (what make demo runs)"),
}


def _main_file(module: str) -> Optional[str]:
    """The file ``python -m module`` runs (a package's ``__main__.py``), found without running it (a
    missing dependency then shows as the command's own import error, not as a missing command)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is not there
        return None
    if spec is None or spec.origin is None:
        return None
    if spec.submodule_search_locations:  # a package: python -m runs its __main__.py
        path = os.path.join(os.path.dirname(spec.origin), "__main__.py")
        return path if os.path.exists(path) else None
    return spec.origin


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROGRAM} COMMAND [flags]   ({PROGRAM} COMMAND --help: that command's flags)", "",
             "commands (each is also python -m MODULE):"]
    lines += [f"  {name:<{width}}  {what}  [{module}]" for name, (module, what) in COMMANDS.items()]
    lines += ["", f"  --version    print the version ({__version__})"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``copymove COMMAND args...`` as ``python -m MODULE args...``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(overview())
        return 0
    if args[0] == "--version":
        print(f"{PROGRAM} {__version__}")
        return 0
    module = COMMANDS.get(args[0], (None,))[0]
    if module is None:
        sys.stderr.write(f"error: {PROGRAM}: unknown command {args[0]!r}; one of: {', '.join(COMMANDS)}\n")
        return USAGE_EXIT
    if _main_file(module) is None:
        sys.stderr.write(f"error: {PROGRAM} {args[0]}: module {module} is not installed in this version\n")
        return USAGE_EXIT
    sys.argv = [f"{PROGRAM} {args[0]}", *args[1:]]  # runpy replaces argv[0] with the module's file
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # absl's app.run ends every command this way
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
