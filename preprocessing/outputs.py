"""The output-path rule every command follows: nothing is deleted or replaced that the command did not create.

- Before any work: an output file that is an existing directory, or that lies inside an input, model
  or data directory, is refused; so is an existing output unless ``--overwrite`` is given; and the
  place must be writable. Work is never done first and lost at the last step.
- Files are written to a temporary name next to their final path and renamed when complete, so a
  kill leaves either the old output or the new one, never half of one.
- A directory output is built in a staging directory beside it. With ``--overwrite`` only the files
  the command itself writes (``owned``) are replaced; anything else in the folder is left alone.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Optional

from preprocessing import fileio
from preprocessing.errors import UsageError

TEMP_MARK = ".tmp-"  # in the names of files and folders still being written


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both made absolute, links resolved locally)."""
    if fileio.is_remote(path) or fileio.is_remote(folder):
        return path.rstrip("/") == folder.rstrip("/") or path.startswith(folder.rstrip("/") + "/")
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def _check_protected(path: str, what: str, protected: Optional[dict]) -> None:
    for role, folder in (protected or {}).items():
        if folder and _inside(path, folder):
            raise UsageError(f"{what} {path} lies inside the {role} {folder}: write it elsewhere, so that nothing "
                             f"of the {role} can be replaced")


def _check_writable(folder: str, what: str, path: str) -> None:
    """Create the folder if needed and prove a file can be written there (a real test: permissions,
    read-only mounts and full quotas all show up), before any work starts."""
    try:
        fileio.makedirs(folder)
        probe = fileio.join(folder, f"{TEMP_MARK}probe-{uuid.uuid4().hex}")
        with fileio.open_file(probe, "w") as f:
            f.write("")
        fileio.remove(probe)
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # remote file systems raise their own error types
        raise UsageError(f"cannot write {what} {path}: {exc}") from exc


def check_file(path: str, *, overwrite: bool = False, protected: Optional[dict] = None,
               what: str = "output") -> str:
    """Refuse an output file path that would destroy data; returns it absolute. ``protected`` maps a
    role ("input directory", "model directory") to a folder the output must not lie in."""
    if not path:
        raise UsageError(f"no {what} path given")
    path = fileio.absolute(path)
    if fileio.isdir(path):
        raise UsageError(f"{what} {path} is an existing directory; give the path of a file to write")
    _check_protected(path, what, protected)
    if fileio.exists(path) and not overwrite:
        raise UsageError(f"{what} {path} exists; pass --overwrite to replace it")
    _check_writable(fileio.parent(path), what, path)
    return path


def temp_name(path: str) -> str:
    return f"{path}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename."""
    tmp = temp_name(path)
    try:
        with fileio.open_file(tmp, mode) as f:
            yield f
        fileio.rename(tmp, path)
    except BaseException:
        if fileio.exists(tmp):
            fileio.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def _relative_files(folder: str) -> list[str]:
    out = []
    for d, _, names in fileio.walk(folder):
        out += [os.path.relpath(fileio.join(d, n), folder) for n in names]
    return sorted(out)


def check_dir(path: str, *, overwrite: bool = False, owned: Callable[[str], bool] = lambda rel: False,
              protected: Optional[dict] = None, what: str = "output directory") -> str:
    """Refuse an output directory that would destroy data; returns it absolute.

    An existing non-empty directory needs ``overwrite``; even then only the files for which
    ``owned(relative path)`` is true are replaced later (``staged_dir``)."""
    if not path:
        raise UsageError(f"no {what} given")
    path = fileio.absolute(path)
    if fileio.exists(path) and not fileio.isdir(path):
        raise UsageError(f"{what} {path} is an existing file; give a directory")
    _check_protected(path, what, protected)
    for role, folder in (protected or {}).items():
        if folder and _inside(folder, path):
            raise UsageError(f"{what} {path} contains the {role} {folder}: write it elsewhere")
    if fileio.isdir(path) and fileio.listdir(path) and not overwrite:
        mine = [rel for rel in _relative_files(path) if owned(rel)]
        hint = f" (it holds {len(mine)} files of an earlier run)" if mine else ""
        raise UsageError(f"{what} {path} is not empty{hint}; pass --overwrite to replace this command's own "
                         "files there (anything else is left alone), or choose an empty or new directory")
    _check_writable(fileio.parent(path), what, path)
    return path


@contextlib.contextmanager
def staged_dir(path: str, owned: Callable[[str], bool]) -> Iterator[str]:
    """Build a directory output in a staging folder beside ``path``, then put it in place.

    If ``path`` does not exist the staging folder is renamed to it. Otherwise (``check_dir`` let it
    through: empty, or ``--overwrite``) the files of the earlier output that ``owned`` claims are
    removed and the new files moved in; other files stay. On failure the staging folder is removed
    and ``path`` is untouched.
    """
    staging = temp_name(path.rstrip("/"))
    fileio.makedirs(staging)
    try:
        yield staging
    except BaseException:
        fileio.rmtree(staging)
        raise
    if not fileio.exists(path):
        fileio.rename(staging, path)
        return
    for rel in _relative_files(path):
        if owned(rel):
            fileio.remove(fileio.join(path, rel))
    for rel in _relative_files(staging):
        target = fileio.join(path, rel)
        fileio.makedirs(fileio.parent(target))
        fileio.rename(fileio.join(staging, rel), target)
    fileio.rmtree(staging)
