"""Start a tf.data service dispatcher or worker for ``python -m trainer.main --data_service``:

    python -m trainer.data_service --port 5050                          # the dispatcher (one per cluster)
    python -m trainer.data_service --port 5051 --dispatcher HOST:5050   # a worker (one per CPU host)

It prints one line saying what listens where and how to use it, then serves until interrupted
(Ctrl-C or SIGTERM). A worker runs the training input pipeline, so it needs this project and the
same TensorFlow version installed, and the records at the --data_dir path the trainer is given
(a shared or gs:// path). What runs where and why: ``trainer.service``.
"""
from __future__ import annotations

import os
import signal
import socket
import time

from absl import flags

from preprocessing import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 0, "Port to listen on (0: any free port, printed).", lower_bound=0, upper_bound=65535)
flags.DEFINE_string("dispatcher", None, "The dispatcher's HOST:PORT: start a worker that registers with it. "
                    "Without it, start the dispatcher.")
flags.DEFINE_string("host", None, "The name other machines reach this one at (default: this machine's host name); "
                    "a worker registers under it, and trainers connect to it there.")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    del argv
    signal.signal(signal.SIGTERM, _interrupt)  # stop on SIGTERM as on Ctrl-C
    from trainer import service  # TensorFlow: imported only now, after the log level is set

    host = FLAGS.host or socket.gethostname()
    if FLAGS.dispatcher:
        server = service.start_worker(FLAGS.dispatcher, FLAGS.port, host)
        port = server._address.rpartition(":")[2]  # the bound port (WorkerServer has no public accessor)
        print(f"tf.data service worker listening on {host}:{port}, registered with the dispatcher at "
              f"{FLAGS.dispatcher}; Ctrl-C stops it", flush=True)
    else:
        server = service.start_dispatcher(FLAGS.port)
        port = server.target.rpartition(":")[2]
        print(f"tf.data service dispatcher listening on grpc://{host}:{port}: start workers with `python -m "
              f"trainer.data_service --port PORT --dispatcher {host}:{port}`, train with `python -m trainer.main "
              f"--data_service grpc://{host}:{port} ...`; Ctrl-C stops it", flush=True)
    try:
        while True:  # short sleeps: a signal caught on one of TensorFlow's threads does not wake this one
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        # Neither server keeps state worth a clean stop, and a worker's stop() waits for each task's
        # tf.data autotuner thread to wake up (measured: 17 s after one job; up to a minute).
        os._exit(0)


if __name__ == "__main__":
    cli.run(main)
