"""Every notebook: committed clean, runs headlessly under papermill and under nbval with tiny parameters.

Run:  cd /work/main && .venv/bin/python -m pytest tests/test_notebooks.py -q     (about 2-3 min on 2 cores)

The ``.ipynb`` files are the source (edit them in JupyterLab; no generator rebuilds them).

What is checked, and how:
  1. The committed notebooks are valid nbformat 4 JSON whose every cell carries its own id (so a
     read does not invent fresh ones and a save does not churn the diff), they carry no outputs and
     no saved widget state, and their first code cell is tagged ``parameters`` and holds only
     ``name: type = literal  # help`` lines (``None``: the preset's value).
  2. papermill executes each notebook with tiny parameters (random-init ``tiny`` policy, ``hash``
     embedder, a few questions and tokens; 00 with its live curves on); the executed copy must hold no
     error, at least one plotly figure (mime ``application/vnd.plotly.v1+json``) and no widget output
     but the explorers' (progress lines are text, live curves end as a static figure). The tiny policy scores 0 everywhere,
     so these runs check that every cell runs and draws, not that anything learns.
  3. nbval cannot pass parameters, so it runs on *prepared* copies: the same notebooks with the tiny
     parameters injected by ``papermill --prepare-only`` (an ``injected-parameters`` cell after the
     ``parameters`` cell, exactly what papermill executes) and nothing executed. ``--nbval-lax``
     re-executes them top to bottom in a fresh kernel and fails on any error; run folders go to a
     separate root, so it repeats the work rather than reusing papermill's runs.
The two tiny runs that 20_compare reads are made here with ``dotslab.trainer.train``.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dotslab.config import field_types, preset_values

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PARAMETER_LINE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*): (?P<type>str|int|float|bool) = (?P<value>.+?)\s+# \S.*$")

TINY = {"preset": "tiny", **preset_values("tiny"), "embedder": "hash", "group_size": 2, "max_new_tokens": 4}
"""The tiny preset's fields given explicitly: a notebook's own parameters-cell values win over its preset."""
PARAMETERS = {
    "00_quickstart.ipynb": {**TINY, "train_size": 24, "eval_size": 6, "reference_set_size": 4,
                            "questions_per_step": 4, "total_steps": 3, "eval_every": 2, "live_plots": True,
                            "compare_seeds": 2, "compare_steps": 2},
    "01_reference_set.ipynb": {**TINY, "train_size": 24, "eval_size": 6, "reference_set_size": 4,
                               "sweep_sizes": "2,4"},
    "02_attention.ipynb": {**TINY, "train_size": 24, "eval_size": 4, "reference_set_size": 6},
    "03_selection_and_replay.ipynb": {**TINY, "train_size": 24, "eval_size": 4, "reference_set_size": 4,
                                      "questions_per_step": 4, "buffer_capacity": 4, "total_steps": 4},
    "10_train.ipynb": {"preset": "tiny", "policy": "tiny", "train_size": 24, "eval_size": 4, "total_steps": 2,
                       "eval_every": 1, "live_plots": False},
    "20_compare.ipynb": {},
}
TRAINS = ("00_quickstart.ipynb", "03_selection_and_replay.ipynb", "10_train.ipynb")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
INTERACTIVE = {"01_reference_set.ipynb": 1, "02_attention.ipynb": 1, "03_selection_and_replay.ipynb": 1}
"""Widgets an executed notebook may keep (the explorers); any other widget output, such as a progress bar
or live curves not replaced by their static figure, reads "Error displaying widget: model not found"
when the saved notebook is reopened."""


def test_every_notebook_has_tiny_parameters():
    assert set(NOTEBOOKS) == set(PARAMETERS), "add the new notebook's tiny parameters to PARAMETERS"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_on_the_miniature_predicts_as_the_mini_preset_does(name):
    """00 and 03 once took their predictor mode from the Config default; when that default moved to 'paper'
    (the SmolLM2 rerun's rule), they would have left the miniature's history mode without a word."""
    from dotslab.params import notebook_parameters, resolve

    cell, _ = notebook_parameters(ROOT / "notebooks" / name)
    if cell.get("policy") != "mini":
        pytest.skip(f"{name} does not run the miniature")
    config = resolve(cell, notebook_only=set(cell) - set(field_types()) - {"preset"}).config
    assert config.predictor.predictor_mode == preset_values("mini")["predictor_mode"] == "history"


CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # nbformat 4.5's id schema


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_nbformat4_json_with_stable_cell_ids(name):
    raw = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))  # raw: nbformat.read fills ids in
    assert raw["nbformat"] == 4 and raw["nbformat_minor"] >= 5, f"{name}: save it as nbformat 4.5+ (cell ids)"
    ids = [cell.get("id") for cell in raw["cells"]]
    missing = [i for i, cell_id in enumerate(ids) if not cell_id or not CELL_ID.match(cell_id)]
    assert not missing, f"{name}: cells {missing} have no valid id"
    assert len(set(ids)) == len(ids), f"{name}: duplicate cell ids {sorted({i for i in ids if ids.count(i) > 1})}"
    nbformat.validate(nbformat.from_dict(raw))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_parameterised(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: strip outputs"
    assert "widgets" not in nb.metadata, f"{name}: saved widget state (clear it: Edit > Clear Outputs, save)"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), f"{name}: first code cell must be tagged parameters"
    names = []
    for line in first.source.splitlines():
        m = PARAMETER_LINE.match(line)
        assert m, f"{name}: parameter line is not `name: type = literal  # help`: {line!r}"
        value = ast.literal_eval(m["value"])  # raises on anything but a literal
        assert value is None or type(value).__name__ == m["type"], \
            f"{name}: {m['name']} is annotated {m['type']}, got {value!r}"
        assert m["type"] == field_types().get(m["name"], m["type"]), f"{name}: {m['name']} is not the Config field's type"
        names.append(m["name"])
    unknown = set(PARAMETERS[name]) - {"run_root", "runs_glob", "preset"} - set(names) - set(field_types())
    assert not unknown, f"{name}: unknown test parameters {unknown}"


def _bound_names(source: str) -> set[str]:
    """Names a cell binds at top level of the kernel: assignments, loop and with targets, imports, defs."""
    names: set[str] = set()
    local_scopes = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            return  # the body's names stay local
        if isinstance(node, local_scopes):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return names


def test_bound_names_sees_loop_targets_and_imports_but_not_function_locals():
    source = ("for seed, x in pairs:\n    pass\nimport numpy as task\ndef f():\n    policy = 1\n"
              "ys = [method for method in ms]\nwith open(p) as fh:\n    eval_size = 3\n")
    assert _bound_names(source) == {"seed", "x", "task", "f", "ys", "fh", "eval_size"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_cell_after_the_parameters_cell_rebinds_a_config_name(name):
    """The config cell reads Config field names from the kernel (dotslab.params): a later cell that bound
    one (`seed = ...`, `for task in ...`) would leak into the config when the config cell runs again."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    watched = set(field_types()) | {"preset"}
    for cell in code[1:]:
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        assert not _bound_names(source) & watched, f"{name}: a later cell binds {_bound_names(source) & watched}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f"{name}: title first"


# ---- executed runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    old = os.environ.get("DOTSLAB_CACHE")
    os.environ["DOTSLAB_CACHE"] = str(root / "cache")  # kernels inherit it: no writes to ~/.cache
    yield root
    if old is None:
        os.environ.pop("DOTSLAB_CACHE", None)
    else:
        os.environ["DOTSLAB_CACHE"] = old


@pytest.fixture(scope="module")
def compare_runs_root(workdir):
    """Two tiny runs (grpo and dots_rr) for 20_compare, made with the trainer itself."""
    from dotslab.config import Config
    from dotslab.trainer import train

    root = workdir / "compare-runs"
    for method in ("grpo", "dots_rr"):
        cfg = Config.from_flat({"preset": "tiny", "method": method, "total_steps": 2, "eval_every": 1,
                                "train_size": 24, "eval_size": 4, "run_root": str(root)})
        train(cfg, progress=False)
    return root


def parameters_for(name, run_root, compare_root):
    params = dict(PARAMETERS[name])
    if name in TRAINS:
        params["run_root"] = str(run_root)
    if name == "20_compare.ipynb":
        params["runs_glob"] = f"{compare_root}/*"
    return params


def run_two_at_a_time(commands: dict[str, list[str]], logs: Path, timeout_s: float = 900
                      ) -> dict[str, tuple[int, str]]:
    """Run ``python -m <args>`` per name, two processes at a time (2 cores); name -> (exit code, log)."""
    logs.mkdir(exist_ok=True)
    pending, running, done = list(commands.items()), {}, {}
    deadline = time.time() + timeout_s
    while pending or running:
        if time.time() > deadline:
            for proc, _ in running.values():
                proc.kill()
            pytest.fail(f"still running after {timeout_s:.0f} s: {sorted(running)}")
        while pending and len(running) < 2:
            name, args = pending.pop(0)
            log = open(logs / f"{name}.log", "w")  # a file, not a pipe: a full pipe would block the child
            running[name] = (subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT / "notebooks", stdout=log,
                                              stderr=subprocess.STDOUT), log)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                done[name] = (proc.returncode, (logs / f"{name}.log").read_text(errors="replace"))
                del running[name]
        time.sleep(0.2)
    return done


@pytest.fixture(scope="module")
def executed(workdir, compare_runs_root):
    """Every notebook executed by papermill with its tiny parameters; name -> (path, exit code, log)."""
    out = workdir / "executed"
    out.mkdir()
    commands = {name: ["papermill", str(ROOT / "notebooks" / name), str(out / name), "--cwd", str(workdir),
                       "--log-output", "-y", json.dumps(parameters_for(name, workdir / "runs", compare_runs_root))]
                for name in NOTEBOOKS}
    return {name: (out / name, *result) for name, result in run_two_at_a_time(commands, workdir / "logs").items()}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_runs_and_draws(executed, name):
    path, code, log = executed[name]
    assert code == 0, f"{name} failed under papermill:\n{log[-4000:]}"
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert figures, f"{name}: no plotly figure in the executed notebook"
    for fig in figures:
        assert fig.data[PLOTLY_MIME]["data"], f"{name}: a figure without traces"
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{name}: not parameterised"
    widgets = [o for o in outputs if WIDGET_MIME in o.get("data", {})]
    assert len(widgets) <= INTERACTIVE.get(name, 0), f"{name}: {len(widgets)} widget outputs left in the saved notebook"


def test_nbval_lax_on_prepared_copies(workdir, compare_runs_root):
    """nbval re-executes the notebooks (tiny parameters injected, nothing executed) in fresh kernels."""
    prepared = workdir / "prepared"
    prepared.mkdir()
    commands = {name: ["papermill", str(ROOT / "notebooks" / name), str(prepared / name), "--prepare-only",
                       "-y", json.dumps(parameters_for(name, workdir / "nbval-runs", compare_runs_root))]
                for name in NOTEBOOKS}
    for name, (code, log) in run_two_at_a_time(commands, workdir / "prepare-logs").items():
        assert code == 0, f"{name}: {log[-2000:]}"
    halves = {f"half{i}": ["pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", "--rootdir", str(prepared),
                           *[str(prepared / n) for n in NOTEBOOKS[i::2]]] for i in (0, 1)}
    for name, (code, log) in run_two_at_a_time(halves, workdir / "nbval-logs").items():
        assert code == 0, log[-5000:]
        assert " passed" in log and "failed" not in log, log[-2000:]


@pytest.mark.parametrize("name", ["00_quickstart.ipynb", "03_selection_and_replay.ipynb"])
def test_notebooks_that_teach_dots_rr_train_it_whatever_the_config_default(name):
    """00 and 03 show selection and replay at work: their parameters cell names the method, so a change of
    Config's default method (GRPO since the cpu benchmark) leaves them training DOTS+RR."""
    from dotslab.params import notebook_parameters

    values, _ = notebook_parameters(ROOT / "notebooks" / name)
    assert values.get("method") == "dots_rr"
