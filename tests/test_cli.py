"""The main job: `dotslab train` runs notebooks/10_train.ipynb under papermill.

Run: .venv/bin/python -m pytest tests/test_cli.py
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dotslab.checkpoint import RunLock
from dotslab.config import PRESET_VALUES, Config

ROOT = Path(__file__).resolve().parent.parent
TINY = ["-p", "preset", "tiny", "-p", "total_steps", "3", "-p", "eval_every", "1"]


def cli_env(tmp_path):
    return {**os.environ, "DOTSLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def run_cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "dotslab", "train", *args], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


def test_train_command_leaves_notebook_and_run_folder(tmp_path):
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "smoke", "-p", "method", "grpo")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "3/3" in p.stderr  # the headless progress bar reaches the terminal
    run = tmp_path / "runs" / "smoke"
    for name in ("config.json", "metrics.jsonl", "10_train.ipynb", "curves.html", "curves.png"):
        assert (run / name).exists(), name
    assert list((run / "checkpoints").glob("step-*.pt"))
    # issue: `-p preset tiny` trained SmolLM2, because the notebook's literals beat the preset
    want = Config.from_flat({"preset": "tiny", "total_steps": 3, "eval_every": 1, "run_name": "smoke", "method": "grpo"})
    assert Config.from_dict(json.loads((run / "config.json").read_text())) == want
    assert "dotslab: preset: tiny" in p.stderr and "dotslab: run folder runs/smoke" in p.stderr
    nb = nbformat.read(run / "10_train.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3]


def test_unknown_parameter_fails_before_a_kernel_starts(tmp_path):
    p = run_cli(tmp_path, "-p", "groupsize", "4")
    assert p.returncode == 2 and "unknown config key(s): groupsize" in p.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_task_data_exits_2_before_a_kernel_starts(tmp_path):
    bad = tmp_path / "missing.jsonl"
    t0 = time.perf_counter()
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "bad", "-p", "task", str(bad))
    assert p.returncode == 2 and "bad task data (nothing was trained; fix it and run again)" in p.stderr
    assert str(bad) in p.stderr and "resume" not in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists() and time.perf_counter() - t0 < 60


def test_failing_cell_exits_nonzero_with_both_paths_and_resume_works(tmp_path):
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "bad", "-p", "policy", str(tmp_path / "no-such-model"))
    assert p.returncode == 1
    assert "executed notebook (shows the error): runs/bad/10_train.ipynb" in p.stderr
    assert "no step was checkpointed, so there is nothing to resume" in p.stderr  # not "resume with --resume"
    assert "--resume" not in p.stderr
    assert "without encryption" not in p.stderr  # the kernel talks over IPC (dotslab.cli, decision 5)
    # a run interrupted after its first checkpoint continues with --resume
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "ok")
    assert p.returncode == 0, p.stderr[-3000:]
    p = run_cli(tmp_path, "-p", "preset", "tiny", "-p", "total_steps", "4", "-p", "eval_every", "1",
                "-p", "run_name", "ok", "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    lines = (tmp_path / "runs" / "ok" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3, 4]


def test_resume_refuses_a_task_file_that_changed(tmp_path):
    from dotslab.data import arithmetic_questions, save_jsonl
    task = tmp_path / "q.jsonl"
    save_jsonl(arithmetic_questions(30, 0), task)
    args = [*TINY, "-p", "run_name", "f", "-p", "task", str(task), "-p", "eval_size", "4"]
    assert run_cli(tmp_path, *args).returncode == 0
    save_jsonl(arithmetic_questions(30, 1), task)  # same size, other questions
    p = run_cli(tmp_path, *args, "--resume")
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"the questions of task {str(task)!r} changed since the run in runs/f started" in p.stderr
    assert "--restart" in p.stderr
    p = run_cli(tmp_path, *args, "--restart")  # the way to start over
    assert p.returncode == 0, p.stderr[-3000:]


# ---- refused up front: exit 2, the key or the folder named, no traceback, no kernel started -----------
@pytest.mark.parametrize("key,value,message", [
    ("max_grad_norm", "-1", "max_grad_norm must be > 0"),
    ("preset", "nonexistent", "preset must be one of ('paper', 'cpu_demo', 'tiny', 'mini'), got 'nonexistent'"),
    ("seed", "-1", "seed must be in [0, 4294967295], got -1"),
    ("device", "gpu", "device must be auto, cpu, mps, cuda[:N] or xpu[:N], got 'gpu'"),
    ("learning_rate", "fast", "learning_rate must be a number, got 'fast'"),
    ("label_history", "0", "label_history must be >= 1, got 0"),
])
def test_bad_values_exit_2_naming_the_key(tmp_path, key, value, message):
    p = run_cli(tmp_path, "-p", key, value)
    assert p.returncode == 2 and f"dotslab: bad parameter: {message}" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and not (tmp_path / "runs").exists()


def test_numbers_parse_as_written_and_the_config_is_printed(tmp_path):
    """Issue: `-p learning_rate 3e-5` was refused ("must be a number, got '3e-5'")."""
    p = run_cli(tmp_path, "-p", "preset", "tiny", "-p", "learning_rate", "3e-5", "-p", "weight_decay", "1e-3",
                "-p", "total_steps", "1", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "set explicitly: learning_rate=3e-05, weight_decay=0.001, total_steps=1" in p.stderr
    assert ("the parameters cell and -p replace these values of preset 'tiny': total_steps 4 -> 1, "
            "learning_rate 0.001 -> 3e-05") in p.stderr
    assert not (tmp_path / "runs").exists()


def test_preset_mini_gives_the_miniature_and_cell_values_beat_a_preset(tmp_path):
    """Issue 17: defaults < preset < parameters cell < -p. 10_train's cell leaves the fields a preset sets
    at None, so `-p preset mini` (README's `make train ARGS="-p preset mini"`) trains the miniature."""
    from dotslab.config import mini
    p = run_cli(tmp_path, "-p", "preset", "mini", "--dry-run")
    assert p.returncode == 0, p.stderr
    printed = next(line for line in p.stderr.splitlines() if "config (fields that differ" in line)
    for key, value in mini().to_flat().items():
        if key in ("method", "policy", "task", "total_steps", "train_size", "eval_size", "eval_every"):
            assert f"{key}={value!r}" in printed, (key, printed)
    assert "replace these values" not in p.stderr  # the cell's None values replace nothing


def _fake_run(tmp_path, **explicit) -> Path:
    """A run folder as `dotslab train -p preset tiny ...` would name it, with a checkpoint file."""
    from dotslab.cli import default_notebook
    from dotslab.params import notebook_parameters, resolve
    cell, _ = notebook_parameters(default_notebook())
    cfg = resolve(cell, {"preset": "tiny", **explicit}, notebook_only=("resume", "live_plots")).config
    run = tmp_path / cfg.run_root / cfg.resolved_run_name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-000002.pt").write_bytes(b"not read by these checks")
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    return run


def test_resume_with_changed_values_says_there_is_nothing_to_resume(tmp_path):
    """Issue: with a derived run name, --resume after changing a -p silently started a fresh run."""
    old = _fake_run(tmp_path)
    p = run_cli(tmp_path, "-p", "preset", "tiny", "-p", "learning_rate", "0.002", "--resume")
    assert p.returncode == 2, p.stderr[-2000:]
    assert "nothing to resume in runs/dots_rr-arithmetic-s0-" in p.stderr
    assert f"runs with the same method, task and seed: runs/{old.name} (differs in learning_rate " \
           f"(saved 0.001, now 0.002))" in p.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 1  # no new folder


def test_fresh_start_on_a_run_is_refused_and_restart_starts_over(tmp_path):
    run = _fake_run(tmp_path)
    p = run_cli(tmp_path, "-p", "preset", "tiny")
    assert p.returncode == 2 and f"runs/{run.name} already holds a run" in p.stderr and "--restart" in p.stderr
    p = run_cli(tmp_path, "-p", "preset", "tiny", "-p", "total_steps", "1", "--restart")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert [c.name for c in (run / "checkpoints").iterdir()] == ["step-000001.pt"]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run = _fake_run(tmp_path)
    with RunLock(run):
        p = run_cli(tmp_path, "-p", "preset", "tiny", "--resume")
    assert p.returncode == 2 and f"runs/{run.name} is in use by another run (PID {os.getpid()})" in p.stderr


def test_unwritable_run_root_exits_2(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    p = run_cli(tmp_path, "-p", "preset", "tiny", "-p", "run_root", "a-file/runs")
    assert p.returncode == 2 and "cannot create or write the run folder a-file/runs/" in p.stderr
    assert "Traceback" not in p.stderr


def test_ctrl_c_stops_cleanly_with_exit_130_and_resume_continues(tmp_path):
    args = ["-p", "preset", "tiny", "-p", "run_name", "int", "-p", "checkpoint_every", "1", "-p", "eval_every", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "dotslab", "train", *args, "-p", "total_steps", "500"],
                            cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    metrics, deadline = tmp_path / "runs" / "int" / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "dotslab: interrupted; the last checkpoint is step " in err
    last = int(err.split("the last checkpoint is step ")[-1].split()[0])
    p = run_cli(tmp_path, *args, "-p", "total_steps", str(last + 1), "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, last + 2))
