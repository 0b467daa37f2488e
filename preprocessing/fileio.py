"""One file layer for every path the project reads or writes outside Beam code.

Local paths go through ``os`` (fast, no TensorFlow); paths with a scheme (``gs://``, ``s3://``,
``hdfs://``, ``ram://``) through ``tf.io.gfile``, which reads object stores (S3 through
tensorflow-io) and has an in-memory ``ram://`` file system for tests. Beam code uses Beam's
``FileSystems`` instead, which its workers understand.
"""
from __future__ import annotations

import glob as _glob
import os
import shutil
from collections.abc import Iterator
from typing import IO


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # only for remote paths: local commands stay free of TensorFlow

    return tf.io.gfile


def join(*parts: str) -> str:
    return os.path.join(*parts)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.lexists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
    """An existing path that is not a directory (a dangling link counts: reading it will say why)."""
    return exists(path) and not isdir(path)


def listdir(path: str) -> list[str]:
    """Entry names of a directory, sorted (gfile marks sub-directories with a trailing slash: dropped)."""
    names = _gfile().listdir(path) if is_remote(path) else os.listdir(path)
    return sorted(n.rstrip("/") for n in names)


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    yield from (_gfile().walk(top) if is_remote(top) else os.walk(top))


def glob(pattern: str) -> list[str]:
    return sorted(_gfile().glob(pattern) if is_remote(pattern) else _glob.glob(pattern))


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    if is_remote(path):
        _gfile().rmtree(path)
    else:
        shutil.rmtree(path)


def rename(src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` (replacing a file there): atomic on a local file system."""
    if is_remote(src):
        _gfile().rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)


def open_file(path: str, mode: str = "r") -> IO:
    return _gfile().GFile(path, mode) if is_remote(path) else open(path, mode)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    with open_file(path, "r") as f:
        return f.read()


def absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def parent(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(os.path.abspath(path))
