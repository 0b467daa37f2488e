"""The project's error types for things a user can fix, so every entry point reports them the same way."""
from __future__ import annotations


class BadInput(ValueError):
    """A file that cannot be used; ``reason`` is a short machine-friendly tag plus detail."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class UsageError(ValueError):
    """A command line that cannot be carried out as given (a bad flag value, an output path that would
    destroy data, an empty input): the message names the flag or path and what to do."""
