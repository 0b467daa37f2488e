"""A Beam file system under its own scheme, ``beamtest://``, backed by a local folder: lets the tests
run the Beam job on a path that is not a plain local path (no network needed).

Importing this module registers the scheme (Beam finds ``FileSystem`` subclasses by their
``scheme()``). ``beamtest://some/path`` is ``ROOT/some/path`` on the local disk.
"""
from __future__ import annotations

import os
import tempfile

from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "beamtest"
PREFIX = f"{SCHEME}://"
ROOT = os.path.join(tempfile.gettempdir(), f"beamtest-{os.getpid()}")


def local(path: str) -> str:
    """The local path behind a ``beamtest://`` path."""
    return os.path.join(ROOT, path[len(PREFIX):]) if path.startswith(PREFIX) else path


def remote(path: str) -> str:
    return PREFIX + os.path.relpath(path, ROOT) if path.startswith(ROOT) else path


class BeamTestFileSystem(LocalFileSystem):
    """LocalFileSystem with every path translated; results translated back."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path):
        head, tail = path.rstrip("/").rsplit("/", 1)
        return head, tail

    def mkdirs(self, path):
        return super().mkdirs(local(path))

    def _list(self, dir_or_prefix):
        for meta in super()._list(local(dir_or_prefix)):
            yield type(meta)(remote(meta.path), meta.size_in_bytes, meta.last_updated_in_seconds)

    def create(self, path, *args, **kwargs):
        os.makedirs(os.path.dirname(local(path)), exist_ok=True)
        return super().create(local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(local(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        return super().copy([local(p) for p in source_file_names], [local(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        for dst in destination_file_names:
            os.makedirs(os.path.dirname(local(dst)), exist_ok=True)
        return super().rename([local(p) for p in source_file_names], [local(p) for p in destination_file_names])

    def exists(self, path):
        return super().exists(local(path))

    def size(self, path):
        return super().size(local(path))

    def last_updated(self, path):
        return super().last_updated(local(path))

    def checksum(self, path):
        return super().checksum(local(path))

    def delete(self, paths):
        return super().delete([local(p) for p in paths])
