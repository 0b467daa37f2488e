"""A progress line for work that reports nothing while it runs (a Beam job, a SavedModel export, a
long training epoch): no stretch of a command's console stays silent for long, so a user can tell
slow from stuck."""
from __future__ import annotations

import contextlib
import sys
import threading
import time

HEARTBEAT_SECONDS = 15.0  # a pause longer than this reads as a hang to someone watching the console


class Heartbeat:
    """Prints ``{what}: still running, N s`` (N: since the last ``restart``) whenever ``every`` seconds
    pass without a ``restart``; from a daemon thread between ``start`` and ``stop``."""

    def __init__(self, what: str, every: float = HEARTBEAT_SECONDS, stream=None):
        self.what, self.every, self.stream = what, every, stream
        self._since = time.monotonic()
        self._restarted = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def restart(self, what: str | None = None) -> None:
        """Something was just reported: the next line waits a full ``every`` (and says ``what``)."""
        self.what = what or self.what
        self._since = time.monotonic()
        self._restarted.set()

    def stop(self) -> None:
        self._stopped.set()
        self._restarted.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if self._restarted.wait(self.every):
                self._restarted.clear()
                continue
            print(f"{self.what}: still running, {time.monotonic() - self._since:.0f} s",
                  file=self.stream or sys.stdout, flush=True)


@contextlib.contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_SECONDS, stream=None):
    """``Heartbeat`` for the duration of a block (nothing is printed when it finishes sooner)."""
    beat = Heartbeat(what, every, stream).start()
    try:
        yield beat
    finally:
        beat.stop()
