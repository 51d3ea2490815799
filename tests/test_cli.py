"""The main job: `dotslab train` runs notebooks/10_train.ipynb under papermill.

Run: .venv/bin/python -m pytest tests/test_cli.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TINY = ["-p", "preset", "tiny", "-p", "total_steps", "3", "-p", "eval_every", "1"]


def run_cli(tmp_path, *args):
    env = {**os.environ, "DOTSLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dotslab", "train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_command_leaves_notebook_and_run_folder(tmp_path):
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "smoke", "-p", "method", "grpo")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "3/3" in p.stderr  # the headless progress bar reaches the terminal
    run = tmp_path / "runs" / "smoke"
    for name in ("config.json", "metrics.jsonl", "10_train.ipynb", "curves.html", "curves.png"):
        assert (run / name).exists(), name
    assert list((run / "checkpoints").glob("step-*.pt"))
    assert json.loads((run / "config.json").read_text())["method"] == "grpo"
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


def test_failing_cell_exits_nonzero_with_both_paths_and_resume_works(tmp_path):
    bad = tmp_path / "missing.jsonl"
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "bad", "-p", "task", str(bad))
    assert p.returncode == 1
    assert "executed notebook (shows the error): runs/bad/10_train.ipynb" in p.stderr
    assert "run folder (resume with --resume and the same -p values): runs/bad" in p.stderr
    nb = nbformat.read(tmp_path / "runs" / "bad" / "10_train.ipynb", as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "DataError"
    # a run interrupted after its first checkpoint continues with --resume
    p = run_cli(tmp_path, *TINY, "-p", "run_name", "ok")
    assert p.returncode == 0, p.stderr[-3000:]
    p = run_cli(tmp_path, "-p", "preset", "tiny", "-p", "total_steps", "4", "-p", "eval_every", "1",
                "-p", "run_name", "ok", "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    lines = (tmp_path / "runs" / "ok" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3, 4]
