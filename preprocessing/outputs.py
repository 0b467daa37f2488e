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
import glob
import os
import shutil
import tempfile
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


def check_protected(path: str, what: str, protected: Optional[dict]) -> None:
    """``protected`` maps a role to an input the command reads (a folder or a file): the output may
    be neither the input itself nor lie inside it, whatever ``--overwrite`` says."""
    for role, inp in (protected or {}).items():
        if not inp:
            continue
        if _inside(path, inp) and _inside(inp, path):
            raise UsageError(f"{what} {path} is the {role}: write it elsewhere, so that the {role} is not replaced")
        if _inside(path, inp):
            raise UsageError(f"{what} {path} lies inside the {role} {inp}: write it elsewhere, so that nothing "
                             f"of the {role} can be replaced")


# Bytes the up-front check writes (and removes): a file of zero bytes needs no free space, so an empty
# probe passed on a full disk and every command failed after its work. 1 MiB also catches a disk about
# to fill; the outputs themselves are CSV and JSON lines, rarely larger.
PROBE_BYTES = 1 << 20


def _check_replaceable(path: str, what: str) -> None:
    """Only a regular file (or a link to one) is ever replaced: a device, a FIFO or a socket named
    as an output would be destroyed (as root: /dev/null replaced by a file)."""
    try:
        fileio.check_regular(path)
    except fileio.NotAFile as exc:
        raise UsageError(f"{what} {path} is {exc.kind}, not a regular file: it is never replaced; give the path "
                         "of a file to write") from exc


def _check_writable(folder: str, what: str, path: str, fs) -> None:
    """Create the folder if needed and prove ``PROBE_BYTES`` can be written there (a real test:
    permissions, read-only mounts, full disks and quotas all show up), before any work starts."""
    probe = fileio.join(folder, f"{TEMP_MARK}probe-{uuid.uuid4().hex}")
    try:
        fs.makedirs(folder)
        try:
            with fs.open(probe, "wb") as f:
                f.write(b"\0" * PROBE_BYTES)
        finally:
            if fs.exists(probe):
                fs.remove(probe)
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # remote file systems raise their own error types
        raise UsageError(f"cannot write {what} {path}: {exc}") from exc


def check_file(path: str, *, overwrite: bool = False, protected: Optional[dict] = None,
               what: str = "output") -> str:
    """Refuse an output file path that would destroy data; returns it absolute. ``protected`` maps a
    role ("input directory", "solution") to every input of the command: a folder the output must
    not lie in, or a file it must not be."""
    if not path:
        raise UsageError(f"no {what} path given")
    path = fileio.absolute(path)
    fs = fileio.filesystem(path)
    if fs.isdir(path):
        raise UsageError(f"{what} {path} is an existing directory; give the path of a file to write")
    _check_replaceable(path, what)
    check_protected(path, what, protected)
    if fs.exists(path) and not overwrite:
        raise UsageError(f"{what} {path} exists; pass --overwrite to replace it")
    _check_writable(fileio.parent(path), what, path, fs)
    clean_leftovers(path)
    return path


def temp_name(path: str) -> str:
    """``<path>.tmp-<pid>-<random>``: the pid tells a later run whether the writer is still alive."""
    return f"{path}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_leftovers(path: str) -> list[str]:
    """What interrupted runs left beside the local output ``path`` (``temp_name`` files and staging
    folders), removed when their process is gone: the names are this project's own, for this very
    output, so nothing else is touched. Each is printed; returns the removed ones. (On a remote
    path the writer may run on another machine: nothing is looked for there.)"""
    if fileio.is_remote(path):
        return []
    stem = path.rstrip(os.sep)
    out = []
    for left in sorted(glob.glob(glob.escape(stem) + TEMP_MARK + "*")):
        pid = left[len(stem) + len(TEMP_MARK):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            print(f"note: {left} was left by an interrupted or running job; remove it if no job is running")
            continue
        if os.path.isdir(left) and not os.path.islink(left):
            shutil.rmtree(left)
        else:
            os.remove(left)
        print(f"removed {left}, left by an interrupted run (process {pid} is gone)")
        out.append(left)
    return out


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename."""
    fs = fileio.filesystem(path)
    tmp = temp_name(path)
    try:
        with fs.open(tmp, mode) as f:
            yield f
        fs.rename(tmp, path)
    except BaseException as exc:
        if fs.exists(tmp):
            fs.remove(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write (a full disk) names no file
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise


def write_text(path: str, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def check_dir(path: str, *, overwrite: bool = False, owned: Callable[[str], bool] = lambda rel: False,
              protected: Optional[dict] = None, what: str = "output directory", beam: bool = False) -> str:
    """Refuse an output directory that would destroy data; returns it absolute.

    An existing non-empty directory needs ``overwrite``; even then only the files for which
    ``owned(relative path)`` is true are replaced later (``staged_dir``). ``beam``: reach remote
    paths through Beam's file systems (the Beam job's)."""
    if not path:
        raise UsageError(f"no {what} given")
    path = fileio.absolute(path)
    fs = fileio.filesystem(path, beam)
    if fs.exists(path) and not fs.isdir(path):
        raise UsageError(f"{what} {path} is an existing file; give a directory")
    check_protected(path, what, protected)
    for role, folder in (protected or {}).items():
        if folder and _inside(folder, path):
            raise UsageError(f"{what} {path} contains the {role} {folder}: write it elsewhere")
    mine = [rel for rel in fs.files_under(path) if owned(rel)] if fs.isdir(path) else []
    for rel in mine:
        _check_replaceable(fileio.join(path, rel), f"{what} file")
    if fs.isdir(path) and fs.listdir(path) and not overwrite:
        hint = f" (it holds {len(mine)} files of an earlier run)" if mine else ""
        raise UsageError(f"{what} {path} is not empty{hint}; pass --overwrite to replace this command's own "
                         "files there (anything else is left alone), or choose an empty or new directory")
    _check_writable(fileio.parent(path), what, path, fs)
    clean_leftovers(path)
    return path


@contextlib.contextmanager
def staged_dir(path: str, owned: Callable[[str], bool], beam: bool = False) -> Iterator[str]:
    """Build a directory output in a staging folder beside ``path``, then put it in place.

    If ``path`` does not exist the staging folder is renamed to it. Otherwise (``check_dir`` let it
    through: empty, or ``--overwrite``) the files of the earlier output that ``owned`` claims are
    removed and the new files moved in; other files stay. On failure the staging folder is removed
    and ``path`` is untouched.
    """
    fs = fileio.filesystem(path, beam)
    staging = temp_name(path.rstrip("/"))
    fs.makedirs(staging)
    try:
        yield staging
    except BaseException:
        fs.rmtree(staging)
        raise
    if not fs.exists(path):
        fileio.rename_dir(staging, path, fs)
        return
    for rel in fs.files_under(path):
        if owned(rel):
            fs.remove(fileio.join(path, rel))
    fileio.move_files_into(staging, path, fs)


@contextlib.contextmanager
def staged_local_dir(path: str, owned: Callable[[str], bool]) -> Iterator[str]:
    """``staged_dir`` for writers that only write local files (OpenCV, NumPy, matplotlib): the
    content is built on the local disk and, for a remote ``path``, copied into its staging folder."""
    if not fileio.is_remote(path):
        with staged_dir(path, owned) as staging:
            yield staging
        return
    with tempfile.TemporaryDirectory() as local, staged_dir(path, owned) as staging:
        yield local
        for rel in fileio.files_under(local):
            target = fileio.join(staging, rel)
            fileio.makedirs(fileio.parent(target))
            with open(os.path.join(local, rel), "rb") as src, fileio.open_file(target, "wb") as dst:
                dst.write(src.read())
