"""Config validation and conversion; metrics JSONL; atomic checkpoints; packaging consistency.

Run: .venv/bin/python -m pytest tests/test_config_metrics.py
"""
import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from dotslab.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from dotslab.config import Config, ConfigError, from_namespace, paper, tiny
from dotslab.metrics import GLOSSARY, JsonlLogger, pass_rate_histogram, read_jsonl, repair_jsonl, truncate_after_step

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("key,value,message", [
    ("selection_temperature", 0.0, r"selection_temperature \(tau\) must be > 0"),
    ("selection_temperature", -1.0, r"selection_temperature \(tau\) must be > 0"),
    ("fresh_fraction", 1.5, r"fresh_fraction \(delta\) must be in \[0, 1\]"),
    ("fresh_fraction", -0.1, r"fresh_fraction \(delta\) must be in \[0, 1\]"),
    ("group_size", 1, r"group_size \(G\) must be >= 2"),
    ("method", "ppo", "method must be one of"),
    ("group_size", "8", "group_size must be an int"),
    ("bf16_autocast", 1, "bf16_autocast must be True or False"),
])
def test_out_of_range_values_raise_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_flat({key: value})


def test_unknown_key_raises_and_lists_it():
    with pytest.raises(ConfigError, match="unknown config key.*groupsize"):
        Config.from_flat({"groupsize": 4})


def test_flat_round_trip_and_preset():
    cfg = Config.from_flat({"preset": "tiny", "method": "grpo", "group_size": 3, "learning_rate": 1})
    assert cfg.policy == "tiny" and cfg.grpo.group_size == 3 and cfg.grpo.learning_rate == 1.0
    assert Config.from_flat(cfg.to_flat()) == cfg
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method = "dots"


def test_from_namespace_ignores_ipython_names():
    ns = {"In": [], "Out": {}, "get_ipython": print, "_": 1, "method": "rr", "total_steps": 3, "live_plots": True}
    cfg = from_namespace(ns, exclude=("live_plots",))
    assert cfg.method == "rr" and cfg.total_steps == 3


def test_paper_preset_values():
    p = paper()
    assert (p.grpo.questions_per_step, p.grpo.group_size, p.predictor.reference_set_size) == (512, 8, 256)
    assert (p.selection.steps_per_round, p.replay.fresh_fraction, p.replay.buffer_capacity) == (2, 0.5, 512)
    assert p.selection.selection_temperature == 1e-3 and p.selection.target_difficulty == 0.5
    assert p.fresh_per_step == 256


def test_run_name_derived_from_config():
    a, b = tiny(), dataclasses.replace(tiny(), seed=1)
    assert a.resolved_run_name != b.resolved_run_name and a.resolved_run_name.startswith("dots_rr-arithmetic-s0-")
    assert dataclasses.replace(a, total_steps=99).resolved_run_name == a.resolved_run_name


def test_jsonl_append_and_torn_line(tmp_path):
    p = tmp_path / "m.jsonl"
    log = JsonlLogger(p)
    log.log({"step": 1, "x": float("nan")})
    log.log({"step": 2, "x": 0.5})
    with open(p, "a") as f:
        f.write('{"step": 3, "x"')  # killed mid-write
    assert [r["step"] for r in read_jsonl(p)] == [1, 2]
    assert repair_jsonl(p) > 0 and p.read_text().endswith("\n")
    JsonlLogger(p).log({"step": 3})
    assert [r["step"] for r in read_jsonl(p)] == [1, 2, 3] and read_jsonl(p)[0]["x"] is None
    truncate_after_step(p, 2)
    assert [r["step"] for r in read_jsonl(p)] == [1, 2]


def test_unparsable_complete_last_line_is_dropped(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2, oops}\n')
    repair_jsonl(p)
    assert read_jsonl(p) == [{"step": 1}]


def test_histogram():
    assert pass_rate_histogram([0, 0.25, 0.25, 1.0], 4) == [1, 2, 0, 0, 1]


def test_checkpoint_atomic_keeps_previous_until_complete(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(2)})
    save_checkpoint(tmp_path, 2, {"w": torch.full((2,), 2.0)})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002.pt"]
    # a torn newer file (disk full mid-write) falls back to the last complete one
    (tmp_path / "checkpoints" / "step-000003.pt").write_bytes(b"garbage")
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "step-000002.pt" and torch.equal(state["w"], torch.full((2,), 2.0))


def test_checkpoint_failure_leaves_old_one(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": 1})

    class Unpicklable:
        def __reduce__(self):
            raise OSError("No space left on device")

    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, {"w": Unpicklable()})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001.pt"]


def test_glossary_matches_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+/[a-z_]+|step)` \|", readme, flags=re.M))
    assert documented == set(GLOSSARY), (set(GLOSSARY) - documented, documented - set(GLOSSARY))


def _names(reqs):
    return {re.split(r"[<>=!\[ ]", r.strip(), maxsplit=1)[0].lower() for r in reqs}


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"] and env["channels"]
    declared = set(py["dependencies"]) | set(py["optional-dependencies"]["dev"]) | set(py["optional-dependencies"]["trl"])
    pinned = {r for r in pip_list if not r.startswith("-e")}
    assert pinned == declared, (pinned ^ declared)
    assert _names(py["optional-dependencies"]["gpu"]) == {"vllm"}
