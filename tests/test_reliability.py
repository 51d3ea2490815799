"""A run folder has one writer, resume never silently starts over, bad input is refused up front.

Run: .venv/bin/python -m pytest tests/test_reliability.py

Each test reproduces one way a careful user broke a run (kills, corrupt files, two writers, bad
values) with the tiny policy and checks the outcome against an uninterrupted run or the message.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import dotslab.trainer as trainer_mod
from dotslab import checkpoint as ckpt
from dotslab.config import Config, tiny
from dotslab.data import DataError, arithmetic_questions, save_jsonl
from dotslab.metrics import MetricsError, read_jsonl
from dotslab.records import Question
from dotslab.rewards import parity_reward
from dotslab.trainer import train


def tiny_cfg(tmp_path, **kw) -> Config:
    return Config.from_flat({"run_root": str(tmp_path / "runs"), "method": "grpo", **kw}, base=tiny())


def strip_time(records):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def steps_run(cfg, **kw):
    """Train and return (result, the steps this call computed)."""
    seen = []
    res = train(cfg, hooks=[lambda r: seen.append(r["step"])], progress=False, reward_fn=parity_reward, **kw)
    return res, [s for s in seen if s > 0]


# ---- 1. one writer per run folder --------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from dotslab.config import Config, tiny
    from dotslab.trainer import train
    from dotslab.rewards import parity_reward
    root, resume = sys.argv[1], sys.argv[2] == "resume"
    cfg = Config.from_flat({"run_root": root, "run_name": "shared", "total_steps": 6, "checkpoint_every": 2,
                            "method": "grpo"}, base=tiny())
    release = Path(root) / "release"
    def hold(rec):  # the first writer parks after step 2 until the test lets it go
        if rec["step"] == 2 and not resume:
            Path(root, "holding").write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not release.exists() and time.time() < deadline:
                time.sleep(0.1)
    train(cfg, hooks=[hold], resume=resume, progress=False, reward_fn=parity_reward)
""")


def _python(tmp_path, tmp_cache, *args, **kw):
    env = {**os.environ, "DOTSLAB_CACHE": str(tmp_cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(tmp_path / "holder.py"), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_second_writer_is_refused_and_the_first_run_is_intact(tmp_path, tmp_cache):
    """Issue: two processes on one run_name both exit 0, with steps logged twice and some deleted."""
    (tmp_path / "holder.py").write_text(HOLDER)
    root = tmp_path / "runs"
    first = _python(tmp_path, tmp_cache, str(root), "fresh")
    _wait_for(root / "holding", first)
    for mode in ("fresh", "resume"):  # a second fresh run, and --resume while the first one trains
        second = _python(tmp_path, tmp_cache, str(root), mode)
        _, err = second.communicate(timeout=300)
        assert second.returncode != 0, f"{mode}: a second writer was let in"
        assert f"{root / 'shared'} is in use by another run (PID {first.pid})" in err, err[-2000:]
    (root / "release").touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert [r["step"] for r in read_jsonl(root / "shared" / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5, 6]


def test_the_lock_dies_with_a_killed_process(tmp_path, tmp_cache):
    """A SIGKILLed run leaves .lock with its PID; --resume takes the folder over and finishes the run."""
    (tmp_path / "holder.py").write_text(HOLDER)
    root = tmp_path / "runs"
    first = _python(tmp_path, tmp_cache, str(root), "fresh")
    _wait_for(root / "holding", first)
    first.kill()
    first.wait()
    assert (root / "shared" / ".lock").read_text().split()[0] == str(first.pid)
    again = _python(tmp_path, tmp_cache, str(root), "resume")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert [r["step"] for r in read_jsonl(root / "shared" / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5, 6]


def test_lock_in_one_process_refuses_a_second_holder(tmp_path):
    with ckpt.RunLock(tmp_path / "run"):
        with pytest.raises(ckpt.RunLockedError, match=f"PID {os.getpid()}"):
            ckpt.RunLock(tmp_path / "run").acquire()
    ckpt.RunLock(tmp_path / "run").acquire().release()  # released on exit


# ---- 2. a corrupt or missing checkpoint never restarts the run silently --------------------------------
def test_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, tmp_cache, capsys):
    full, _ = steps_run(tiny_cfg(tmp_path, run_name="full", total_steps=6))
    cfg = tiny_cfg(tmp_path, run_name="cut", total_steps=5, checkpoint_every=1)
    steps_run(cfg)
    files = ckpt.list_checkpoints(tmp_path / "runs" / "cut")
    assert [p.name for p in files] == ["step-000004.pt", "step-000005.pt"]  # keep_checkpoints = 2
    files[-1].write_bytes(files[-1].read_bytes()[:1000])  # a disk that filled mid-write
    resumed, computed = steps_run(Config.from_flat({"total_steps": 6}, base=cfg), resume=True)
    assert computed == [5, 6], "resumed from step 0 instead of the checkpoint before the torn one"
    assert "step-000005.pt is unreadable" in capsys.readouterr().err
    assert strip_time(resumed.records) == strip_time(full.records)


@pytest.mark.parametrize("damage", ["delete the folder", "truncate the only checkpoint"])
def test_resume_with_nothing_usable_refuses_and_keeps_the_metrics(tmp_path, tmp_cache, damage):
    cfg = tiny_cfg(tmp_path, run_name="gone", total_steps=4, keep_checkpoints=1)
    steps_run(cfg)
    run = tmp_path / "runs" / "gone"
    before = (run / "metrics.jsonl").read_text()
    if damage == "delete the folder":
        for p in ckpt.list_checkpoints(run):
            p.unlink()
        (run / "checkpoints").rmdir()
    else:
        only = ckpt.list_checkpoints(run)[-1]
        only.write_bytes(only.read_bytes()[:500])
    with pytest.raises(ckpt.ResumeError, match=r"nothing usable to resume in .*gone.*metrics.jsonl with steps 0-4"):
        steps_run(cfg, resume=True)
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_where_nothing_was_trained_starts_fresh(tmp_path, tmp_cache):
    """The notebooks call train(cfg, resume=True) to mean 'continue if there is a run'."""
    _, computed = steps_run(tiny_cfg(tmp_path, total_steps=2), resume=True)
    assert computed == [1, 2]


def test_stale_temp_files_are_removed(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, run_name="tmp", total_steps=2)
    steps_run(cfg)
    stale = [tmp_path / "runs" / "tmp" / "checkpoints" / ".tmp-abc123.pt", tmp_path / "runs" / "tmp" / ".config.json.x1"]
    for p in stale:
        p.write_bytes(b"left by a kill")
    steps_run(Config.from_flat({"total_steps": 3}, base=cfg), resume=True)
    assert not any(p.exists() for p in stale)


# ---- 4. the config lives in the checkpoint -------------------------------------------------------------
def test_deleting_config_json_keeps_the_resume_check_and_names_the_keys(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, run_name="cfg", total_steps=2)
    steps_run(cfg)
    (tmp_path / "runs" / "cfg" / "config.json").unlink()
    other = Config.from_flat({"learning_rate": 0.5, "group_size": 3}, base=cfg)
    with pytest.raises(ckpt.ResumeError, match=r"checkpoint step-000002.pt in group_size \(saved 2, now 3\), "
                                               r"learning_rate \(saved 0.001, now 0.5\)"):
        steps_run(other, resume=True)
    assert not (tmp_path / "runs" / "cfg" / "config.json").exists()  # the refused config was not written
    _, computed = steps_run(Config.from_flat({"total_steps": 3}, base=cfg), resume=True)  # total_steps may grow
    assert computed == [3] and json.loads((tmp_path / "runs" / "cfg" / "config.json").read_text())["total_steps"] == 3


# ---- 7. metrics are repaired before they are read --------------------------------------------------------
def test_torn_line_ending_in_newline_does_not_stop_resume(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, run_name="torn", total_steps=4, checkpoint_every=2)
    full, _ = steps_run(tiny_cfg(tmp_path, run_name="ref", total_steps=4))
    steps_run(Config.from_flat({"total_steps": 2}, base=cfg))
    with open(tmp_path / "runs" / "torn" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "train/lo\n')
    resumed, _ = steps_run(cfg, resume=True)
    assert strip_time(resumed.records) == strip_time(full.records)


def test_bad_line_mid_file_names_path_and_line(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, run_name="bad", total_steps=2)
    steps_run(cfg)
    path = tmp_path / "runs" / "bad" / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(MetricsError, match=rf"{path}:2: not a JSON record"):
        steps_run(Config.from_flat({"total_steps": 3}, base=cfg), resume=True)


# ---- 8. non-finite weights are never checkpointed ---------------------------------------------------------
def test_nan_weights_stop_the_run_and_are_not_checkpointed(tmp_path, tmp_cache, monkeypatch):
    real = trainer_mod.policy_update

    def poison_at_step_3(model, *a, step, **k):
        out = real(model, *a, step=step, **k)
        if step == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(trainer_mod, "policy_update", poison_at_step_3)
    cfg = tiny_cfg(tmp_path, run_name="nan", total_steps=4, checkpoint_every=1)
    with pytest.raises(ckpt.NonFiniteWeightsError, match=r"not finite after step 3 .*last checkpoint is step 2"):
        steps_run(cfg)
    path, state = ckpt.latest_checkpoint(tmp_path / "runs" / "nan")
    assert path.name == "step-000002.pt" and ckpt.non_finite_tensor(state["model"]) is None


def test_a_checkpoint_with_nan_weights_is_skipped_on_resume(tmp_path):
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, 1, {"model": {"w": torch.ones(2)}}, cfg=Config(keep_checkpoints=2))
    torch.save({"model": {"w": torch.tensor([float("nan"), 1.0])}}, run / "checkpoints" / "step-000002.pt")
    found, problems = ckpt.scan_checkpoints(run)
    assert found[0].name == "step-000001.pt" and problems == ["step-000002.pt holds non-finite weights (w)"]


# ---- 9. prompts that do not fit the context are refused at load time --------------------------------------
def test_prompt_longer_than_the_context_is_refused_naming_the_question(tmp_path, tmp_cache):
    path = tmp_path / "long.jsonl"
    qs = list(arithmetic_questions(20, seed=0))
    qs[7] = Question("the-long-one", "What is 1 + " + "1 + " * 200 + "1?", "202")
    save_jsonl(qs, path)
    with pytest.raises(DataError, match=r"long.jsonl: question 'the-long-one': the prompt is \d+ tokens .* of "
                                        r"the model's 512-token context"):
        steps_run(tiny_cfg(tmp_path, task=str(path), eval_size=2))
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_huge_prompt_is_refused_before_tokenizing(tmp_path, tmp_cache):
    path = tmp_path / "huge.jsonl"
    qs = list(arithmetic_questions(20, seed=0))
    qs[3] = Question("huge", "x" * 1_000_000, "1")
    save_jsonl(qs, path)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"question 'huge': the prompt has 1,000,000 characters"):
        steps_run(tiny_cfg(tmp_path, task=str(path), eval_size=2))
    assert time.perf_counter() - t0 < 60


# ---- 10. smaller items ----------------------------------------------------------------------------------
def test_reward_errors_count_the_steps_own_generations_and_reproduce_after_resume(tmp_path, tmp_cache):
    """Issue: rollout/reward_errors added in the previous evaluation's errors and differed after a resume."""
    from dotslab.tasks import load_task
    cfg = tiny_cfg(tmp_path, run_name="full", total_steps=4, eval_every=2, checkpoint_every=2)
    eval_ids = set(load_task(cfg)[1].ids)

    def fails_on_eval(completion, question):
        if question.id in eval_ids:
            raise RuntimeError("verifier crashed")
        return parity_reward(completion, question)

    full = train(cfg, progress=False, reward_fn=fails_on_eval)
    assert all(r["rollout/reward_errors"] == 0 for r in full.records if r["step"] > 0)
    assert [r["eval/reward_errors"] for r in full.records if "eval/pass_rate" in r] == [8, 8, 8]
    part = Config.from_flat({"run_name": "part"}, base=cfg)
    train(Config.from_flat({"total_steps": 2}, base=part), progress=False, reward_fn=fails_on_eval)
    resumed = train(part, resume=True, progress=False, reward_fn=fails_on_eval)
    assert strip_time(resumed.records) == strip_time(full.records)


def test_rewards_outside_unit_interval_are_counted(tmp_path, tmp_cache, caplog):
    res = train(tiny_cfg(tmp_path, total_steps=2), progress=False, reward_fn=lambda c, q: 1.5)
    steps = [r for r in res.records if r["step"] > 0]
    assert all(r["rollout/reward_clamped"] == 4 * 2 for r in steps)  # B = 4 groups x G = 2 completions
    assert all(r["train/mean_reward"] == 1.0 for r in steps) and "outside [0, 1]; clamped" in caplog.text


def test_unwritable_run_root_is_a_clear_error(tmp_path, tmp_cache):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = Config.from_flat({"run_root": str(blocker / "runs"), "total_steps": 1}, base=tiny())
    with pytest.raises(ckpt.RunFolderError, match=r"cannot create or write the run folder .*a-file/runs/.*: Not a "
                                                  r"directory; choose a writable run_root"):
        steps_run(cfg)


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, tmp_cache, capsys):
    cfg = tiny_cfg(tmp_path, run_name="int", total_steps=6, checkpoint_every=2)

    def interrupt(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="the last checkpoint is step 2") as info:
        train(cfg, hooks=[interrupt], progress=False, reward_fn=parity_reward)
    assert "continue with resume=True" in capsys.readouterr().err
    assert info.value.__suppress_context__ and len(info.traceback) <= 3  # a short traceback, not torch's
    ckpt.RunLock(tmp_path / "runs" / "int").acquire().release()  # and the folder is free again


def test_trainer_resume_refuses_changed_questions_naming_the_task(tmp_path):
    from dotslab.checkpoint import ResumeError
    from dotslab.data import arithmetic_questions, save_jsonl
    from dotslab.rewards import parity_reward
    from dotslab.trainer import train
    path = tmp_path / "q.jsonl"
    save_jsonl(arithmetic_questions(30, 0), path)
    cfg = tiny_cfg(tmp_path, task=str(path), eval_size=2, total_steps=2, eval_every=0, checkpoint_every=1)
    train(cfg, progress=False, reward_fn=parity_reward)
    assert json.loads((tmp_path / "runs" / cfg.resolved_run_name / "data.json").read_text())["train"]["size"] == 28
    rows = path.read_text().splitlines()
    path.write_text("\n".join(rows[:-1] + [rows[-1].replace('"answer": "', '"answer": "1')]) + "\n")  # one answer edited
    with pytest.raises(ResumeError, match=f"questions of task {str(path)!r} changed"):
        train(dataclasses.replace(cfg, total_steps=3), resume=True, progress=False, reward_fn=parity_reward)
