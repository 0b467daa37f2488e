"""Packaging: the worker image is built from the pinned versions, and an install ships every package."""
from __future__ import annotations

import ast
import os
import re

from checks import setup_result as _setup_result
from setuptools import find_packages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_constants() -> dict:
    """The module-level string constants of setup.py, read without running it."""
    with open(os.path.join(REPO, "setup.py")) as f:
        tree = ast.parse(f.read())
    return {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant)}


def test_the_dockerfile_builds_on_the_pinned_beam_and_python():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read()
    base = re.search(r"^FROM\s+apache/beam_python(\d+\.\d+)_sdk:(\S+)\s*$", text, re.M)
    assert base, "the Dockerfile must build on Beam's official SDK image"
    python, beam = base.groups()
    assert beam == setup_constants()["BEAM_VERSION"]
    with open(os.path.join(REPO, "setup.py")) as f:
        assert f'python_requires=">={python},' in f.read()
    copied = set(re.findall(r"^COPY\s+(\w+)\s", text, re.M))
    assert {"preprocessing", "trainer", "serving"} <= copied


def test_an_install_ships_every_subpackage():
    """setup.py's package list must include the subpackages (report, synth, ...): an editable
    install finds them anyway, a real one (the worker image) would not."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from distutils.core import run_setup

    on_disk = set(find_packages(where=REPO, include=["preprocessing*", "trainer*", "serving*"]))
    assert {"preprocessing.report", "preprocessing.synth"} <= on_disk
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        shipped = set(run_setup("setup.py", stop_after="init").packages)
    finally:
        os.chdir(cwd)
    assert shipped == on_disk


def test_the_base_install_is_light_and_the_test_install_has_everything():
    """``pip install .`` is enough for screening (no TensorFlow, no Beam); ``.[pipeline]`` brings them;
    ``.[test]`` (what the Makefile installs) and the worker image (the Dockerfile) get everything."""
    dist = _setup_result()
    names = {re.split(r"[=<>\[ ]", r)[0] for r in dist.install_requires}
    assert not names & {"tensorflow", "tensorflow-io", "apache-beam"}
    assert {"numpy", "opencv-python-headless", "pypdfium2", "tqdm"} <= names
    extras = dist.extras_require
    assert {"tensorflow", "apache-beam"} <= {re.split(r"[=<>\[ ]", r)[0] for r in extras["pipeline"]}
    assert set(extras["pipeline"]) <= set(extras["test"])
    with open(os.path.join(REPO, "Makefile")) as f:
        assert '-e ".[test]"' in f.read()
    with open(os.path.join(REPO, "Dockerfile")) as f:
        assert 'pip install --no-cache-dir ".[pipeline]"' in f.read()
