"""``python -m trainer.main`` with a real SIGKILL injected by a test (never a flag of the trainer).

    KILL_AT=epoch:N python tests/kill_driver.py [trainer.main flags]   # after epoch N's backup is written
    KILL_AT=export  python tests/kill_driver.py [trainer.main flags]   # while the export is being written

The kill is a callback appended to the run's own (``trainer.train.run(callbacks=...)``), or a
wrapper around the export's metadata writer, installed here before trainer.main runs.
"""
from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from preprocessing import cli  # noqa: E402
from trainer import export, train  # noqa: E402
from trainer import main as trainer_main  # noqa: E402


def kill_now() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            kill_now()


def install(point: str) -> None:
    if point.startswith("epoch:"):
        run = train.run
        train.run = lambda cfg, **kw: run(cfg, callbacks=(KillAfterEpoch(int(point.split(":")[1])),), **kw)
    elif point == "export":
        export.write_metadata = lambda *a, **k: kill_now()  # the SavedModel is written, metadata not yet
    else:
        raise SystemExit(f"unknown KILL_AT {point!r}")


if __name__ == "__main__":
    install(os.environ["KILL_AT"])
    cli.run(trainer_main.main)
