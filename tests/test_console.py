"""The ``copymove`` console script: one subcommand per ``python -m`` entry point, the version from one
place, and what an install ships (entry point, long description, licence)."""
from __future__ import annotations

import os
import subprocess
import sys

from checks import setup_result as installed_setup
from test_help import KEY_FLAGS

from preprocessing import console
from preprocessing.version import __version__

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_YET = {"serving.screen"}  # the screening command (its own branch) may not be merged yet


def copymove(*args: str, check_modules: str = "") -> subprocess.CompletedProcess:
    """``copymove ARGS`` in a fresh process; ``check_modules``: names that must not be imported by then."""
    script = ("import sys\nfrom preprocessing import console\ncode = console.main(sys.argv[1:])\n"
              f"loaded = [m for m in {check_modules.split()!r} if m in sys.modules]\n"
              "assert not loaded, f'imported {loaded}'\nsys.exit(code)\n")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=120)


def test_every_entry_point_is_a_subcommand():
    modules = {module for module, _ in console.COMMANDS.values()}
    assert set(KEY_FLAGS) <= modules and "serving.screen" in modules
    for module in modules - NOT_YET:
        assert console._main_file(module), f"{module} cannot be run"


def test_a_subcommand_runs_its_module_as_python_m_does_and_loads_only_it():
    helped = copymove("evaluate", "--help", check_modules="tensorflow keras apache_beam")
    assert helped.returncode == 0 and "--solution" in helped.stdout and "--per_image_csv" in helped.stdout
    bad = copymove("evaluate", "--no_such_flag")
    assert bad.returncode == 2 and "no_such_flag" in bad.stderr
    unknown = copymove("trian")
    assert unknown.returncode == 2 and "unknown command 'trian'" in unknown.stderr and "train" in unknown.stderr


def test_version_and_overview():
    version = copymove("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"copymove {__version__}"
    overview = copymove(check_modules="tensorflow apache_beam")
    assert overview.returncode == 0
    assert all(f"  {name} " in overview.stdout for name in console.COMMANDS), overview.stdout


def test_the_install_has_the_script_the_version_and_the_long_description():
    dist = installed_setup()
    assert dist.get_version() == __version__
    assert dist.entry_points["console_scripts"] == ["copymove = preprocessing.console:main"]
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert dist.get_long_description() == f.read()
    with open(os.path.join(REPO, "LICENSE"), encoding="utf-8") as f:
        assert "Apache License" in f.read(2000) and dist.get_license() == "Apache-2.0"
    with open(os.path.join(REPO, "CHANGELOG.md"), encoding="utf-8") as f:
        assert __version__.split(".dev")[0] in f.read()
