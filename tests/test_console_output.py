"""What a command prints while it works: a progress line through long silent stretches, no start-up
noise from Beam's worker processes, local Beam runs on every core, one readable line per epoch and
one "best epoch" (counted from 1, the monitored metric named)."""
from __future__ import annotations

import csv
import io
import subprocess
import sys
import time

import numpy as np

from preprocessing.beam_runner import WORKER_NOISE, quiet_worker_stderr, use_local_cores
from preprocessing.progress import heartbeat


def test_a_silent_stretch_gets_progress_lines_and_a_short_one_none():
    out = io.StringIO()
    with heartbeat("export", every=0.05, stream=out):
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)"], check=True)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("export: still running, ") for line in lines)
    quick = io.StringIO()
    with heartbeat("export", every=5, stream=quick):
        pass
    assert quick.getvalue() == ""
    reporting = io.StringIO()  # work that reports often (an epoch line each time) needs no heartbeat
    with heartbeat("training", every=1.0, stream=reporting) as beat:
        for epoch in range(8):
            time.sleep(0.05)
            beat.restart(f"epoch {epoch + 2}")
        time.sleep(1.4)
    assert reporting.getvalue() == "epoch 9: still running, 1 s\n", reporting.getvalue()


def test_local_runs_use_every_core_unless_told_otherwise():
    assert use_local_cores([], cores=4) == ["--direct_running_mode=multi_processing", "--direct_num_workers=4"]
    assert use_local_cores(["--direct_num_workers=1"], cores=4) == ["--direct_num_workers=1"]
    assert use_local_cores(["--direct_running_mode", "in_memory"], cores=4) == ["--direct_running_mode", "in_memory"]
    assert use_local_cores([], cores=1) == []  # one core: one in-process worker is fastest
    cluster = ["--runner=FlinkRunner", "--flink_master=localhost:8081"]
    assert use_local_cores(cluster, cores=4) == cluster


def test_worker_start_up_noise_is_dropped_from_child_processes_and_the_rest_kept(capfd):
    noisy = "; ".join(f"print({text.decode()!r}, file=sys.stderr)" for text in WORKER_NOISE)
    script = f"import sys; print('real problem', file=sys.stderr); {noisy}; print('after', file=sys.stderr)"
    with quiet_worker_stderr():
        subprocess.run([sys.executable, "-c", script], check=True)  # inherits fd 2, as Beam's workers do
    err = capfd.readouterr().err
    assert "real problem" in err and "after" in err
    assert not any(text.decode() in err for text in WORKER_NOISE), err
    with quiet_worker_stderr(enabled=False):  # --verbose_logs: everything
        subprocess.run([sys.executable, "-c", script], check=True)
    err = capfd.readouterr().err
    assert all(text.decode() in err for text in WORKER_NOISE), err


def test_one_line_per_epoch_names_the_monitor_and_its_best_epoch_from_1(tmp_path):
    import keras

    from trainer.callbacks import CSVLog, EpochSummary, best_logged

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    out, log = io.StringIO(), str(tmp_path / "log.csv")
    model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0,
              callbacks=[CSVLog(log), EpochSummary(3, "val_loss", {}, stream=out)])
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(len(line) < 200 and "| best val_loss " in line for line in lines)
    with open(log) as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["val_loss"]) for r in rows]
    best = best_logged(log, "val_loss", "min")
    assert best["epoch"] == int(np.argmin(losses)) + 1 and best["monitor"] == "val_loss"  # 1-based, named
    assert lines[-1].endswith(f"(epoch {best['epoch']})")  # the console's best is the log's best


def test_the_demo_shows_a_commands_summary_as_lines_and_keeps_its_json_in_a_file(tmp_path, capsys, monkeypatch):
    """A real step (serving.evaluate on a two-row solution): its table is echoed, its JSON line is not."""
    import json
    import os

    from absl import flags

    defined = set(flags.FLAGS)
    from serving import demo

    for name in set(flags.FLAGS) - defined:  # the demo's flags (--width, ...) would clash with trainer's later
        delattr(flags.FLAGS, name)
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    (tmp_path / "sol.csv").write_text("case_id,annotation,height,width\na,authentic,4,4\nb,\"[1, 2]\",4,4\n")
    (tmp_path / "sub.csv").write_text("case_id,annotation\na,authentic\nb,authentic\n")
    summary = str(tmp_path / "summaries" / "evaluate.json")
    stdout = demo.run_step(6, 7, "evaluate", "serving.evaluate", ["--solution", str(tmp_path / "sol.csv"),
                                                                   "--submission", str(tmp_path / "sub.csv")],
                           summary=summary)
    shown = capsys.readouterr().out
    assert "oF1 0.5000" in shown and "full summary (JSON): " in shown
    assert not any(line.removeprefix("  | ").startswith("{") for line in shown.splitlines()), shown
    with open(summary) as f:
        assert json.load(f) == demo.last_json(stdout) and demo.last_json(stdout)["oF1"] == 0.5
