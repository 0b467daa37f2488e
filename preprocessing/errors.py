"""The project's error types for things a user can fix, so every entry point reports them the same way."""
from __future__ import annotations

# Exit status of every command line that cannot be carried out as given (a bad flag, a user error, an
# environment error); a bug exits 1, as an uncaught exception would.
USAGE_EXIT = 2


class BadInput(ValueError):
    """A file that cannot be used; ``reason`` is a short machine-friendly tag plus detail."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NotAFile(OSError):
    """A path that exists but is not a regular file (a FIFO, a device, a socket, a directory):
    reading a FIFO would block forever, replacing a device would destroy it."""

    def __init__(self, path: str, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path, self.kind = str(path), kind
        self.strerror = f"{kind}, not a regular file"

    def __str__(self) -> str:
        return self.args[0]


class UsageError(ValueError):
    """A command line that cannot be carried out as given (a bad flag value, an output path that would
    destroy data, an empty input): the message names the flag or path and what to do."""
