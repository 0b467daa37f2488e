"""One file layer for every path the project reads or writes: local, or any remote scheme.

Three back ends behind one small interface (``FileSystem``), chosen by the path:
- local paths: ``os`` (fast, no TensorFlow, symbolic links seen as files so a dangling one is reported);
- remote paths in Beam code (``beam=True``): Beam's ``FileSystems``, which Beam's workers use too
  (``gs://`` with apache-beam[gcp], ``s3://`` with [aws], ``hdfs://``, or any registered scheme);
- other remote paths: ``tf.io.gfile`` (``gs://``, ``s3://`` through tensorflow-io, ``hdfs://``, and an
  in-memory ``ram://`` file system that the tests use).

Object stores have no real directories and cannot rename a folder in one step: ``rename_dir``
moves a folder file by file there (``ram://`` even loses a folder's contents when asked to rename
it), and atomically with ``os.replace`` on a local disk.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import glob as _glob
import io
import os
import shutil
import stat
import sys
from collections.abc import Callable
from typing import IO

from preprocessing.errors import BadInput, NotAFile


def is_remote(path: str) -> bool:
    return "://" in str(path)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What an ``os.stat`` mode says a path is, in words ("a regular file", "a FIFO", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path: str) -> None:
    """Raise ``NotAFile`` if ``path`` exists and is not a regular file (links followed); a missing
    path or a dangling link passes (opening it says why). Remote stores hold no FIFOs or devices
    (reading a folder there fails at once): nothing to check."""
    if is_remote(path):
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise NotAFile(path, kind_of(mode))


class LocalFS:
    """The local disk through ``os``."""

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def files_in(self, folder: str) -> list[str]:
        """The names of the entries directly in ``folder`` that are not folders (dangling links
        and link loops included: reading them says what is wrong)."""
        return [n for n in self.listdir(folder) if not os.path.isdir(os.path.join(folder, n))]

    def files_under(self, top: str) -> list[str]:
        """Every file below ``top`` (recursively), as paths relative to it."""
        out = []
        for d, _, names in os.walk(top):
            out += [os.path.relpath(os.path.join(d, n), top) for n in names]
        return sorted(out)

    def glob(self, pattern: str) -> list[str]:
        return sorted(_glob.glob(pattern))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def open(self, path: str, mode: str = "r") -> IO:
        """Only regular files are read: a FIFO named like an image would block forever."""
        if "r" in mode:
            check_regular(path)
        return open(path, mode)


# TensorFlow's file-system errors -> the errno of the OSError that names the path (any other: EIO).
_ERRNO_OF = {"NotFoundError": errno.ENOENT, "PermissionDeniedError": errno.EACCES,
             "UnauthenticatedError": errno.EACCES, "AlreadyExistsError": errno.EEXIST}


@contextlib.contextmanager
def _named(path: str):
    """TensorFlow's file-system errors (a NotFoundError without a message, an HTTP failure with a
    class name of FailedPreconditionError) as an ``OSError`` naming ``path``: every command prints
    those as one line, and readers that record a bad file (``unreadable``) catch them."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(exc, tf.errors.OpError):
            raise
        detail = (exc.message or "").strip().splitlines()
        raise OSError(_ERRNO_OF.get(type(exc).__name__, errno.EIO),
                      f"{type(exc).__name__}" + (f": {detail[0]}" if detail else ""), path) from exc


def _naming_the_path(method):
    """A GFileFS method whose TensorFlow errors name its first argument, the path."""
    @functools.wraps(method)
    def wrapper(self, path, *args, **kwargs):
        with _named(path):
            return method(self, path, *args, **kwargs)
    return wrapper


class _NamedFile:
    """A ``tf.io.gfile.GFile`` whose errors (raised lazily, on the first read or write of a remote
    file) name its path (``_named``)."""

    def __init__(self, f, path: str):
        self._f, self._path = f, path

    def __getattr__(self, name):
        attr = getattr(self._f, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with _named(self._path):
                return attr(*args, **kwargs)
        return call

    def __iter__(self):
        with _named(self._path):
            yield from self._f

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        with _named(self._path):
            self._f.close()


class GFileFS:
    """Remote paths through ``tf.io.gfile`` (TensorFlow is imported on first use only; tensorflow-io,
    which registers ``s3://`` with TensorFlow, too)."""

    @property
    def _g(self):
        import tensorflow as tf
        import tensorflow_io  # noqa: F401  (registers s3:// and other schemes with tf.io.gfile)

        return tf.io.gfile

    @_naming_the_path
    def exists(self, path: str) -> bool:
        return self._g.exists(path)

    @_naming_the_path
    def isdir(self, path: str) -> bool:
        return self._g.isdir(path)

    @_naming_the_path
    def listdir(self, path: str) -> list[str]:
        return sorted(n.rstrip("/") for n in self._g.listdir(path))

    @_naming_the_path
    def files_in(self, folder: str) -> list[str]:
        for _, _, names in self._g.walk(folder):  # the first step lists the folder itself
            return sorted(names)
        return []

    @_naming_the_path
    def files_under(self, top: str) -> list[str]:
        out = []
        for d, _, names in self._g.walk(top):
            out += [os.path.relpath(join(d, n), top) for n in names]
        return sorted(out)

    @_naming_the_path
    def glob(self, pattern: str) -> list[str]:
        return sorted(self._g.glob(pattern))

    @_naming_the_path
    def makedirs(self, path: str) -> None:
        self._g.makedirs(path)

    @_naming_the_path
    def remove(self, path: str) -> None:
        self._g.remove(path)

    @_naming_the_path
    def rmtree(self, path: str) -> None:
        self._g.rmtree(path)

    @_naming_the_path
    def rename(self, src: str, dst: str) -> None:
        self._g.rename(src, dst, overwrite=True)

    @_naming_the_path
    def open(self, path: str, mode: str = "r") -> IO:
        return _NamedFile(self._g.GFile(path, mode), path)


class BeamFS:
    """Remote paths through Beam's ``FileSystems`` (for the Beam job: its workers read the same way).
    Object stores have no directories: a "directory" is a prefix that some file has."""

    @property
    def _fs(self):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems

    def _matches(self, pattern: str, limit=None) -> list[str]:
        found = self._fs.match([pattern], limits=None if limit is None else [limit])[0].metadata_list
        return sorted(m.path for m in found)

    def exists(self, path: str) -> bool:
        return self._fs.exists(path) or self.isdir(path)

    def isdir(self, path: str) -> bool:
        """Some file lies below ``path`` (``**`` crosses folders; ``*`` would not)."""
        return bool(self._matches(path.rstrip("/") + "/**", limit=1))

    def listdir(self, path: str) -> list[str]:
        """The names directly in ``path``: its files and the first folder of every deeper file."""
        prefix = path.rstrip("/") + "/"
        return sorted({m[len(prefix):].split("/", 1)[0] for m in self._matches(prefix + "**")})

    def files_in(self, folder: str) -> list[str]:
        return [rel for rel in self.files_under(folder) if "/" not in rel]

    def files_under(self, top: str) -> list[str]:
        prefix = top.rstrip("/") + "/"
        return sorted(m[len(prefix):] for m in self._matches(prefix + "**"))

    def glob(self, pattern: str) -> list[str]:
        return self._matches(pattern)

    def makedirs(self, path: str) -> None:
        if not self._fs.exists(path):
            self._fs.mkdirs(path)

    def remove(self, path: str) -> None:
        self._fs.delete([path])

    def rmtree(self, path: str) -> None:
        files = self.files_under(path)
        if files:
            self._fs.delete([join(path, rel) for rel in files])
        if self._fs.exists(path):
            self._fs.delete([path])

    def rename(self, src: str, dst: str) -> None:
        if self._fs.exists(dst):
            self._fs.delete([dst])
        self._fs.rename([src], [dst])

    def open(self, path: str, mode: str = "r") -> IO:
        raw = self._fs.create(path) if "w" in mode else self._fs.open(path)
        return raw if "b" in mode else io.TextIOWrapper(raw, encoding="utf-8")


_LOCAL, _GFILE, _BEAM = LocalFS(), GFileFS(), BeamFS()


def filesystem(path: str, beam: bool = False):
    """The back end for ``path``: local, or remote through Beam (``beam``) or tf.io.gfile."""
    if not is_remote(path):
        return _LOCAL
    return _BEAM if beam else _GFILE


# ----------------------------------------------------------------------------- the everyday functions

def join(*parts: str) -> str:
    return os.path.join(*parts)


def exists(path: str) -> bool:
    return filesystem(path).exists(path)


def isdir(path: str) -> bool:
    return filesystem(path).isdir(path)


def isfile(path: str) -> bool:
    """An existing path that is not a directory (a dangling link counts: reading it will say why)."""
    fs = filesystem(path)
    return fs.exists(path) and not fs.isdir(path)


def listdir(path: str) -> list[str]:
    return filesystem(path).listdir(path)


def files_under(top: str) -> list[str]:
    return filesystem(top).files_under(top)


def glob(pattern: str) -> list[str]:
    return filesystem(pattern).glob(pattern)


def makedirs(path: str) -> None:
    filesystem(path).makedirs(path)


def remove(path: str) -> None:
    filesystem(path).remove(path)


def rmtree(path: str) -> None:
    filesystem(path).rmtree(path)


def rename(src: str, dst: str) -> None:
    """Move the file ``src`` to ``dst`` (replacing a file there): atomic on a local file system."""
    filesystem(src).rename(src, dst)


def rename_dir(src: str, dst: str, fs=None) -> None:
    """Move the folder ``src`` to ``dst`` (which must not exist): one atomic rename locally, file by
    file on object stores."""
    fs = fs or filesystem(src)
    if fs is _LOCAL:
        os.replace(src, dst)
    else:
        move_files_into(src, dst, fs)


def move_files_into(src: str, dst: str, fs=None) -> None:
    """Move every file below the folder ``src`` to the same relative path below ``dst`` (replacing
    files of that name, leaving others), then remove ``src``."""
    fs = fs or filesystem(src)
    for rel in fs.files_under(src):
        target = join(dst, rel)
        fs.makedirs(parent(target))
        fs.rename(join(src, rel), target)
    fs.rmtree(src)


def open_file(path: str, mode: str = "r") -> IO:
    return filesystem(path).open(path, mode)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


@contextlib.contextmanager
def input_errors(path: str):
    """Failures while reading the input file ``path`` become ``BadInput`` naming it and the reason:
    the one place read failures become reasons (``read_input``, ``images.check_file``)."""
    try:
        yield
    except BadInput:
        raise
    except NotAFile as exc:
        raise BadInput(path, f"not_a_file: {exc.kind}; only regular files are read") from exc
    except OSError as exc:
        raise BadInput(path, f"unreadable: {exc.strerror or exc}") from exc
    except Exception as exc:  # remote file systems raise their own error types
        raise BadInput(path, f"unreadable: {type(exc).__name__}: {exc}") from exc


def read_input(path: str, read: Callable[[str], bytes] = read_bytes) -> bytes:
    """The bytes of an input file (an image, a mask), or ``BadInput`` naming it and the reason. Only
    regular files are read (``not_a_file`` otherwise); ``read``: another reader of the same path
    (Beam's file systems in the Beam job)."""
    with input_errors(path):
        check_regular(path)
        return read(path)


def read_text(path: str) -> str:
    """The UTF-8 text of a file; other bytes are a ``BadInput`` naming it (not a bare UnicodeDecodeError)."""
    try:
        with open_file(path, "r") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise BadInput(path, f"not UTF-8 text ({exc})") from exc


def absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def parent(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(os.path.abspath(path))
