"""Assertions and helpers several test modules share (imported like ``tiny_model``)."""
from __future__ import annotations

import os
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def refused(proc, *words) -> str:
    """A refusal is one line on stderr naming the problem, exit status 2, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), line
    for w in words:
        assert w in line, (w, line)
    return line


def setup_result():
    """setup.py's ``setup()`` arguments as setuptools sees them, without installing anything."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from distutils.core import run_setup
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        return run_setup("setup.py", stop_after="init")
    finally:
        os.chdir(cwd)
