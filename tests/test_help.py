"""Every command's --help lists its own flags and the shared ones it uses, and exits 0; a flag error
is one line and exit status 2. Real processes, started together (each takes well under a second)."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# command -> flags its --help must show (its own, the config-derived ones, the shared ones)
KEY_FLAGS = {
    "preprocessing.synth": ["--output_dir", "--num_train", "--style", "--seed", "--overwrite"],
    "preprocessing.main": ["--input_dir", "--output_dir", "--image_size", "--max_pixels", "--allow_pickle_masks",
                           "--overwrite"],
    "preprocessing.report": ["--input_dir", "--output_dir", "--max_images", "--overwrite"],
    "trainer.main": ["--data_dir", "--model_dir", "--config", "--epochs", "--width", "--batch_size"],
    "trainer.data_service": ["--port", "--dispatcher", "--host"],
    "serving.score": ["--model_dir", "--input_dir", "--overwrite", "--workers", "--threshold", "--detector"],
    "serving.beam_score": ["--model_dir", "--input_dir", "--threshold", "--detector", "--overwrite"],
    "serving.calibrate": ["--model_dir", "--data_dir", "--thresholds", "--workers", "--allow_pickle_masks"],
    "serving.evaluate": ["--solution", "--submission", "--per_image_csv", "--overwrite"],
    "serving.report": ["--submission", "--input_dir", "--output_dir", "--max_images"],
    "serving.demo": ["--output_dir", "--overwrite", "--num_train", "--train_minutes"],
}


def start(module: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_every_commands_help_lists_its_flags_and_exits_0():
    running = {module: start(module, "--help") for module in KEY_FLAGS}
    for module, process in running.items():
        code, out, err = finish(process)
        assert code == 0, (module, err)
        missing = [flag for flag in KEY_FLAGS[module] + ["--[no]verbose_logs"]
                   if f"  {flag}:" not in out and f"  --[no]{flag[2:]}:" not in out]
        assert not missing, f"{module} --help lacks {missing}:\n{out}"
        assert "--helpfull" in out and "\\\n" not in out and "         [" not in out, out  # no glued usage lines
        assert "--flagfile" not in out, f"{module} --help shows absl's own flags"


def test_helpfull_keeps_everything_and_flag_errors_exit_2():
    full, unknown, missing = (start("serving.score", "--helpfull"), start("serving.score", "--no_such_flag"),
                              start("preprocessing.main", "--output_dir", "/nonexistent/x"))
    code, out, _ = finish(full)
    assert code == 0 and "--flagfile" in out and "--model_dir" in out
    code, out, err = finish(unknown)
    assert code == 2 and "no_such_flag" in err and err.startswith("error: ") and len(err.splitlines()) == 1, err
    code, out, err = finish(missing)  # a required flag (Beam's parser path, known_only) is reported the same way
    assert code == 2 and "--input_dir" in err and err.startswith("error: "), err
