"""One error type for bad input files, so every batch job can record (path, reason) the same way."""
from __future__ import annotations


class BadInput(ValueError):
    """A file that cannot be used; ``reason`` is a short machine-friendly tag plus detail."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
