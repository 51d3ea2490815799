"""Config validation, parsing and presets; notebook configs; metrics JSONL; atomic checkpoints.

Run: .venv/bin/python -m pytest tests/test_config_metrics.py
"""
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from dotslab.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from dotslab.config import Config, ConfigError, mini, paper, tiny
from dotslab.params import from_namespace
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


def test_every_field_has_a_range_and_defaults_pass():
    from dotslab.config import RANGES
    assert set(RANGES) == set(Config().to_flat()), "give the new field a range in config.RANGES"
    for name in ("paper", "cpu_demo", "tiny"):
        Config.from_flat({"preset": name})  # every preset passes its own ranges


@pytest.mark.parametrize("key,value", [
    ("max_grad_norm", -1.0), ("max_grad_norm", 0.0), ("weight_decay", -0.01), ("adapter_learning_rate", -1e-3),
    ("label_history", 0), ("label_history", -5), ("device", "gpu"), ("device", "cuda:x"), ("seed", -1),
    ("learning_rate", 1e308), ("learning_rate", float("nan")), ("temperature", float("inf")),
    ("min_labels_to_train", 0), ("keep_checkpoints", 0), ("run_name", "../elsewhere"), ("run_name", "a/b"),
    ("policy", ""), ("task", "  "), ("eval_size", -1),
])
def test_values_that_used_to_pass_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}( \(\w+\))? must be "):
        Config.from_flat({key: value})


def test_accepted_edges():
    cfg = Config.from_flat({"max_grad_norm": float("inf"), "device": "cuda:1", "seed": 2**32 - 1, "weight_decay": 0,
                            "run_name": "my-run.v2", "label_history": 8, "min_labels_to_train": 8})
    assert cfg.grpo.max_grad_norm == float("inf") and cfg.device == "cuda:1"
    with pytest.raises(ConfigError, match="label_history must be >= min_labels_to_train"):
        Config.from_flat({"label_history": 4, "min_labels_to_train": 8})


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match=r"preset must be one of \('paper', 'cpu_demo', 'tiny', 'mini'\), got 'nonexistent'"):
        Config.from_flat({"preset": "nonexistent"})


def test_preset_sets_every_field_it_names_and_explicit_values_win():
    from dotslab.config import PRESET_VALUES
    cfg = Config.from_flat({"preset": "tiny", "total_steps": 1})
    flat = cfg.to_flat()
    assert all(flat[k] == v for k, v in PRESET_VALUES["tiny"].items() if k != "total_steps")
    assert cfg.total_steps == 1 and tiny().total_steps == 4
    assert PRESET_VALUES["cpu_demo"] == {} and Config.from_flat({"preset": "cpu_demo"}) == Config()


@pytest.mark.parametrize("key,text,expected", [
    ("learning_rate", "3e-5", 3e-5), ("learning_rate", "1e-3", 1e-3), ("learning_rate", "1", 1.0),
    ("max_grad_norm", "inf", float("inf")), ("total_steps", "1_000", 1000), ("bf16_autocast", "true", True),
    ("bf16_autocast", "False", False), ("bf16_autocast", "0", False), ("run_name", "123", "123"),
    ("run_name", '"my run"', "my run"), ("task", "data/x.jsonl", "data/x.jsonl"), ("preset", "tiny", "tiny"),
    (None, "3e-5", 3e-5), (None, "1e-3", 1e-3), (None, "true", True), (None, "none", None), (None, "null", None),
    (None, "[1,2]", [1, 2]), (None, "[1, 2.5]", [1, 2.5]), (None, '{"a": 1}', {"a": 1}), (None, "'quoted'", "quoted"),
    (None, '"2"', "2"), (None, "no", "no"), (None, "colocate", "colocate"), (None, "-4", -4), (None, ".5", 0.5),
])
def test_parse_value_reads_values_as_meant(key, text, expected):
    from dotslab.params import parse_value
    got = parse_value(text, key)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("key,text,message", [
    ("total_steps", "2.5", "total_steps must be an integer, got '2.5'"),
    ("learning_rate", "fast", "learning_rate must be a number, got 'fast'"),
    ("bf16_autocast", "maybe", "bf16_autocast must be true or false, got 'maybe'"),
])
def test_parse_value_refuses_naming_the_key(key, text, message):
    from dotslab.params import parse_value
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_value(text, key)


# ---- notebooks: the parameters cell, papermill's injected cell, re-runs --------------------------------
CELL_10 = ('preset: str = "cpu_demo"  # base\npolicy: str = None  # p\ntask: str = None  # t\n'
           'total_steps: int = None  # s\nseed: int = 0  # s\nresume: bool = False  # r\n')


def _kernel(*sources: str) -> dict:
    """Run cells in a fresh IPython shell, as JupyterLab would, and return its namespace."""
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.reset()
    for source in ("from dotslab.params import from_namespace", *sources):
        result = shell.run_cell(source, store_history=True)
        assert result.success, result.error_in_exec
    return dict(shell.user_ns)


def test_injected_preset_fills_the_fields_the_cell_leaves_none():
    """`dotslab train -p preset mini` (papermill injects `preset = "mini"` after the cell): 10_train's cell
    leaves policy/task/total_steps None, so the miniature's settings apply, field by field."""
    ns = _kernel(CELL_10, '# Parameters\npreset = "mini"\nresume = True\n',
                 "cfg = from_namespace(globals(), exclude=('resume',))")
    assert (ns["cfg"].policy, ns["cfg"].task, ns["cfg"].total_steps, ns["cfg"].method) == \
        ("mini", "addition:2-4", 200, "dots_rr")
    assert ns["cfg"] == mini()


def test_cell_values_beat_the_preset_and_the_config_cell_says_which(capsys):
    """Issue 17: defaults < preset < parameters cell < -p. A value written in the cell wins over the preset;
    the preset fills the rest; the config cell prints the preset values the cell replaced."""
    cell = CELL_10.replace("policy: str = None", 'policy: str = "smollm2"') + "group_size: int = 3  # g\n"
    ns = _kernel(cell, '# Parameters\npreset = "tiny"\ntotal_steps = 1\n',
                 "cfg = from_namespace(globals(), exclude=('resume',))")
    cfg = ns["cfg"]
    assert (cfg.policy, cfg.grpo.group_size, cfg.total_steps) == ("smollm2", 3, 1)  # cell, cell, -p
    assert (cfg.task, cfg.grpo.learning_rate, cfg.to_flat()["embedder"]) == ("arithmetic", 1e-3, "hash")  # tiny's
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "replace these values of preset 'tiny':" in line)
    assert {"policy 'tiny' -> 'smollm2'", "group_size 2 -> 3", "total_steps 4 -> 1"} == set(line.split(": ", 2)[2].split(", "))
    # the default preset (cpu_demo) names nothing: the cell's values and the Config defaults
    ns = _kernel(cell, "cfg = from_namespace(globals(), exclude=('resume',))")
    assert ns["cfg"] == Config.from_flat({"policy": "smollm2", "group_size": 3})


def test_rerunning_an_edited_cell_gives_what_the_user_sees():
    """No input-history parsing: edit the parameters cell, run it and the config cell again, get the edit;
    a later cell's own names (03's `for alpha, tau in ...`) never reach the config."""
    ns = _kernel(CELL_10, "cfg = from_namespace(globals(), exclude=('resume',))",
                 "for alpha, tau in ((0.5, 1e-3), (0.8, 0.1)):\n    pass",
                 "cfg2 = from_namespace(globals(), exclude=('resume',))",
                 CELL_10.replace("total_steps: int = None", "total_steps: int = 5").replace("seed: int = 0", "seed: int = 7"),
                 "cfg3 = from_namespace(globals(), exclude=('resume',))")
    assert ns["cfg2"] == ns["cfg"] == Config()
    assert (ns["cfg3"].total_steps, ns["cfg3"].seed) == (5, 7)


def test_config_cell_without_a_parameters_cell_says_so():
    with pytest.raises(ConfigError, match="no parameters cell has run"):
        from_namespace({"x": 1})


def test_a_misspelt_parameter_is_named_with_the_field_it_nearly_spells():
    """Without history parsing the config cell reads Config names only; a typo in the parameters cell would
    pass unseen, so annotated names close to a field are refused (the notebook's own names are excluded)."""
    ns = _kernel('preset: str = "cpu_demo"  # p\ntotl_steps: int = 3  # t\n')
    with pytest.raises(ConfigError, match=r"totl_steps is not a Config field \(did you mean total_steps\?\)"):
        from_namespace(ns)
    ns = _kernel('preset: str = "cpu_demo"  # p\nraw_attention_temperature: float = 0.1  # own\n'
                 'live_plots: bool = True  # own\n')
    assert from_namespace(ns, exclude=("raw_attention_temperature",)) == Config()


def test_a_config_name_rebound_to_a_non_value_is_named():
    import math
    with pytest.raises(ConfigError, match="task holds a module, not a value"):
        from_namespace({"preset": "cpu_demo", "task": math})


def test_paper_preset_values():
    p = paper()
    assert (p.grpo.questions_per_step, p.grpo.group_size, p.predictor.reference_set_size) == (512, 8, 256)
    assert (p.selection.steps_per_round, p.replay.fresh_fraction, p.replay.buffer_capacity) == (2, 0.5, 512)
    assert p.selection.selection_temperature == 1e-3 and p.selection.target_difficulty == 0.5
    assert p.fresh_per_step == 256


def test_a_config_saved_before_checkpointing_existed_reads_as_running_without_it():
    """Runs saved before ``gradient_checkpointing`` was added kept every activation: reading their config
    must say so (False), not today's default (True), so a comparison or a resume sees the difference."""
    from dotslab.config import config_diff
    old = Config().to_dict()
    del old["grpo"]["gradient_checkpointing"]
    assert Config().grpo.gradient_checkpointing is True
    assert Config.from_dict(old).grpo.gradient_checkpointing is False
    assert [d.split(" ")[0] for d in config_diff(old, Config())] == ["gradient_checkpointing"]
    assert config_diff(old, Config.from_flat({"gradient_checkpointing": False})) == []
    assert mini().grpo.gradient_checkpointing is False   # the miniature's measured runs kept every activation


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


def test_glossary_matches_the_reference_doc():
    readme = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+/[a-z_]+|step)` \|", readme, flags=re.M))
    assert documented == set(GLOSSARY), (set(GLOSSARY) - documented, documented - set(GLOSSARY))


def test_config_reward_names_are_the_verifiers():
    from dotslab.config import REWARDS
    from dotslab.rewards import REWARD_NAMES
    assert REWARDS == REWARD_NAMES


def test_notebook_display_of_a_config_lists_only_changed_fields():
    cfg = Config.from_flat({"method": "dots_rr", "learning_rate": 1e-4, "group_size": 8})
    assert cfg.changed_fields() == {"method": "dots_rr", "group_size": 8, "learning_rate": 1e-4}
    md = cfg._repr_markdown_()
    assert "| `method` | `'dots_rr'` |" in md and "| `learning_rate` | `0.0001` |" in md
    assert md.count("\n| `") == 3 and Config()._repr_markdown_() == "**Config**: all defaults."
