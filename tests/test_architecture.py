"""The layer rule, read from the source with ``ast`` (no module is imported, so no side effects):
``preprocessing`` imports neither ``trainer`` nor ``serving``; ``serving`` imports ``preprocessing``
only (never ``trainer``); no package imports ``benchmarks`` or ``tests``."""
from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = {
    "preprocessing": {"trainer", "serving", "benchmarks", "tests"},
    "serving": {"trainer", "benchmarks", "tests"},
    "trainer": {"benchmarks", "tests"},
}


def imported_modules(path: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, in functions too."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                package = os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, ".")
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                out.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def package_files(package: str) -> list[str]:
    files = []
    for d, _, names in os.walk(os.path.join(REPO, package)):
        files += [os.path.join(d, n) for n in names if n.endswith(".py")]
    return sorted(files)


def violations(package: str) -> list[str]:
    return [f"{os.path.relpath(path, REPO)}:{line} imports {module}"
            for path in package_files(package) for line, module in imported_modules(path)
            if module.split(".")[0] in FORBIDDEN[package]]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    assert package_files(package), f"no modules found in {package}"
    found = violations(package)
    assert not found, "imports against the layer rule:\n  " + "\n  ".join(found)


def test_the_check_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The rule can fail: a module that imports serving from preprocessing is reported with its line."""
    fake = tmp_path / "preprocessing"
    fake.mkdir()
    (fake / "bad.py").write_text("import os\n\ndef f():\n    from serving import metric\n")
    monkeypatch.setattr(__import__(__name__), "REPO", str(tmp_path))
    assert violations("preprocessing") == ["preprocessing/bad.py:4 imports serving"]


# Library code with configs but no command line: it reads the config vocabulary
# (preprocessing.hyperparams), never the CLI layer (preprocessing.cli, absl).
NO_COMMAND_LINE = ["preprocessing/hyperparams.py", *package_files("preprocessing/matching"), "serving/fused.py",
                   "serving/postprocess.py", "trainer/config.py"]


def cli_imports(path: str) -> list[str]:
    """Imports of absl or preprocessing.cli, written either way (``from preprocessing import cli`` too)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    names = [(n.lineno, a.name) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [(n.lineno, f"{n.module}.{a.name}") for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module for a in n.names]
    return [f"{os.path.relpath(path, REPO)}:{line} imports {name}" for line, name in names
            if name.split(".")[0] == "absl" or name.startswith("preprocessing.cli")]


def test_configs_do_not_import_the_command_line_layer():
    assert all(os.path.exists(p if os.path.isabs(p) else os.path.join(REPO, p)) for p in NO_COMMAND_LINE)
    found = [v for p in NO_COMMAND_LINE for v in cli_imports(p if os.path.isabs(p) else os.path.join(REPO, p))]
    assert not found, "config modules importing the CLI layer:\n  " + "\n  ".join(found)
    assert cli_imports(os.path.join(REPO, "serving", "score.py"))  # the check sees both spellings
    assert cli_imports(os.path.join(REPO, "preprocessing", "cli.py"))
