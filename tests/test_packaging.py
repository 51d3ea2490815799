"""The installable workbench: the wheel holds every module and the notebooks, `dotslab train` runs from
a plain (not editable) install in any folder, and environment.yml lists what pyproject.toml declares.

Run: .venv/bin/python -m pytest tests/test_packaging.py

To stay fast, the fresh venv reaches the already-installed dependencies through a .pth file that names
this interpreter's site-packages; the wheel itself is installed with --no-deps, so dotslab comes from it.
"""
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "dotslab", "notebooks")


def _run(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{args}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def test_wheel_installs_and_trains_from_another_folder(tmp_path):
    src = tmp_path / "src"  # build from a copy: an in-tree build would leave build/ in the checkout
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")}
                                          if (ROOT / name).is_dir() else {}))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
          str(src)])
    wheel = next((tmp_path / "dist").glob("dotslab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dotslab").rglob("*.py")}
    notebooks = {f"dotslab/notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert modules | notebooks <= names, sorted((modules | notebooks) - names)

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "outer-site-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(DOTSLAB_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import dotslab, jupyter_client.kernelspec as k; print(dotslab.__file__); "
             "print(k.KernelSpecManager().get_kernel_spec('python3').argv[0])")
    where, kernel_python = _run([str(python), "-c", probe], cwd=elsewhere, env=env).stdout.split()
    assert Path(where).is_relative_to(purelib), where  # the wheel's dotslab, not the checkout's
    assert Path(kernel_python) == python, kernel_python  # and the kernel papermill starts runs it too

    p = _run([str(venv / "bin" / "dotslab"), "train", "-p", "preset", "tiny", "-p", "total_steps", "1"],
             cwd=elsewhere, env=env)
    assert f"dotslab: notebook {purelib / 'dotslab' / 'notebooks' / '10_train.ipynb'}" in p.stderr
    assert "dotslab: preset: tiny" in p.stderr and "set explicitly: total_steps=1" in p.stderr
    run_dir = elsewhere / re.findall(r"^dotslab: run folder (\S+)$", p.stderr, flags=re.M)[-1]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1] and "train/loss" in records[-1]
    assert json.loads((run_dir / "config.json").read_text())["policy"] == "tiny"


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
