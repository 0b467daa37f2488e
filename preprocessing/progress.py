"""A progress line for work that reports nothing while it runs (a Beam job, a SavedModel export):
no stretch of a command's console stays silent for long, so a user can tell slow from stuck."""
from __future__ import annotations

import contextlib
import sys
import threading
import time

HEARTBEAT_SECONDS = 15.0  # a pause longer than this reads as a hang to someone watching the console


@contextlib.contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_SECONDS, stream=None):
    """While the block runs, print ``{what}: still running, N s`` every ``every`` seconds (from a
    daemon thread; nothing is printed when the block finishes sooner)."""
    out = stream or sys.stdout
    done = threading.Event()
    start = time.monotonic()

    def beat():
        while not done.wait(every):
            print(f"{what}: still running, {time.monotonic() - start:.0f} s", file=out, flush=True)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
