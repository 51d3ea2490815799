"""Run folders and atomic, resumable checkpoints.

Not from the paper. A run folder ``runs/<run_name>/`` holds ``config.json``, ``metrics.jsonl``,
``checkpoints/step-XXXXXX.pt`` and figures.

Decisions:
  1. A checkpoint is written to a temp file in the same folder, fsync'ed, then renamed; the
     previous checkpoint is deleted only after the new one is complete, so a kill at any point
     leaves at least one loadable checkpoint.
  2. ``latest_checkpoint`` picks the newest file that loads; a corrupt newest file (a disk that
     filled mid-write) falls back to the one before it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import Config

CKPT_DIR = "checkpoints"


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_run_dir(cfg: Config, *, resume: bool) -> Path:
    """Create (or, when resuming, check) ``<run_root>/<run_name>`` and write config.json.

    Resuming with a config that differs from the saved one raises: a resumed run must continue
    the same experiment. Starting fresh in a folder that already has checkpoints raises too.
    """
    run_dir = Path(cfg.run_root) / cfg.resolved_run_name
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        if resume:
            ours = cfg.to_dict()
            diff = sorted(k for k in set(saved) | set(ours) if k != "total_steps" and saved.get(k) != ours.get(k))
            if diff:
                raise ValueError(f"cannot resume {run_dir}: config differs from the saved one in {diff}")
        elif list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} already holds a run; pass resume=True to continue it, "
                                  "or choose another run_name")
    write_json_atomic(cfg_path, cfg.to_dict())
    return run_dir


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    d = Path(run_dir) / CKPT_DIR
    return sorted(d.glob("step-*.pt")) if d.exists() else []


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` as the checkpoint of ``step`` and then drop older ones."""
    d = Path(run_dir) / CKPT_DIR
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"step-{step:06d}.pt"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(run_dir):
        if old != final:
            old.unlink(missing_ok=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint and its state, or None if there is none."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # torn or corrupt file: fall back to the previous one
            continue
    return None
