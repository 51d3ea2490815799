"""Run folders: one writer at a time, atomic checkpoints, and resumes that never silently start over.

Not from the paper. A run folder ``runs/<run_name>/`` holds ``config.json``, ``metrics.jsonl``,
``checkpoints/step-XXXXXX.pt``, figures, and ``.lock`` (the holder's PID).

Decisions:
  1. One writer per folder: an OS lock (``fcntl.flock``) on ``.lock``, held for the whole run. The OS
     drops it when its process dies, so a SIGKILLed run never blocks ``--resume``. ``dotslab train``
     takes it before starting the kernel and marks it in ``$DOTSLAB_RUN_LOCK``; the kernel it starts
     (its child) may then train the folder. Local file systems only (flock over NFS is not reliable).
  2. A checkpoint is written to a temp file, fsync'ed and renamed; the newest ``keep_checkpoints``
     (default 2) are kept, so an unreadable newest file falls back to the one before. Weights that
     are not finite are never written (:class:`NonFiniteWeightsError`). Temp files a kill left behind
     are removed when the folder is next opened.
  3. A checkpoint carries its config; a resume compares against it (``config.json`` is only a copy),
     naming every key that differs. ``resume=True`` on a folder that holds traces of training
     (checkpoint files, metrics past step 0) but no usable checkpoint refuses and says what it found;
     a folder where nothing was trained starts fresh (the notebooks' idempotent ``resume=True``).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import Config, config_diff

CKPT_DIR = "checkpoints"
LOCK_FILE = ".lock"
LOCK_ENV = "DOTSLAB_RUN_LOCK"


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked; the message says why and what to do."""


class RunLockedError(RunFolderError):
    """Another process is writing the run folder."""


class ResumeError(RunFolderError, ValueError):
    """A resume would not continue the same run: nothing usable to resume, or another config."""


class RunExistsError(RunFolderError, FileExistsError):
    """A fresh start was asked for in a folder that already holds a run."""


class NonFiniteWeightsError(RunFolderError, ArithmeticError):
    """The weights became NaN or infinite; they were not checkpointed."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- one writer per folder --------------------------------------------------------------------------
class RunLock:
    """An exclusive OS lock on ``<run_dir>/.lock``; the file holds the holder's PID for messages."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot create or write the run folder {self.run_dir}: {err.strerror}; "
                                 f"choose a writable run_root") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            if os.environ.get(LOCK_ENV) == str(self.path.resolve()) and pid == str(os.getppid()):
                return self  # held for this process by the `dotslab train` that started it
            raise RunLockedError(f"{self.run_dir} is in use by another run (PID {pid}); wait for it to end or "
                                 f"stop it (kill {pid}), then continue it with --resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class RunGuard:
    """One ``train`` call's hold on its run folder: the lock, released whatever happens, and a clean
    stop on Ctrl-C that says where the last checkpoint is."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None
        self.run_dir: Path | None = None

    def open(self, cfg: Config, *, resume: bool) -> Path:
        """Lock ``<run_root>/<run_name>`` and prepare it (see :func:`prepare_run_dir`)."""
        self.lock = RunLock(cfg.run_dir).acquire()
        self.run_dir = prepare_run_dir(cfg, resume=resume)
        return self.run_dir

    def __enter__(self) -> "RunGuard":
        return self

    def __exit__(self, kind: Any, err: Any, tb: Any) -> None:
        if self.lock is not None:
            self.lock.release()
        if kind is KeyboardInterrupt and self.run_dir is not None:
            msg = f"interrupted; {last_checkpoint_text(self.run_dir)}; continue with resume=True (dotslab train --resume)"
            print(f"dotslab: {msg}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt(msg) from None


# ---- the folder ---------------------------------------------------------------------------------------
def remove_stale_files(run_dir: Path) -> list[Path]:
    """Delete temp files a killed writer left (call it holding the lock: no one else is writing)."""
    stale = [*(run_dir / CKPT_DIR).glob(".tmp-*.pt"), *run_dir.glob(".config.json.*"), run_dir / "metrics.tmp"]
    removed = [p for p in stale if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def prepare_run_dir(cfg: Config, *, resume: bool) -> Path:
    """Create (or, when resuming, check) ``<run_root>/<run_name>`` and write config.json.

    Resuming with a config that differs from the saved one raises ResumeError naming the keys
    (``config.RUN_ONLY`` fields may change). Starting fresh in a folder that holds checkpoints raises
    RunExistsError. Call it holding the folder's lock.
    """
    run_dir = cfg.run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create the run folder {run_dir}: {err.strerror}; choose a writable "
                             f"run_root (now {cfg.run_root!r})") from None
    remove_stale_files(run_dir)
    cfg_path = run_dir / "config.json"
    if resume and cfg_path.exists():
        _check_same_config(json.loads(cfg_path.read_text(encoding="utf-8")), cfg, run_dir, "config.json")
    elif not resume and list_checkpoints(run_dir):
        raise RunExistsError(f"{run_dir} already holds a run ({describe_run_folder(run_dir)}); continue it with "
                             f"resume=True (dotslab train --resume), start over with dotslab train --restart, "
                             f"or choose another run_name")
    if not resume or cfg_path.exists():  # on resume without config.json, the checkpoint's config decides
        write_json_atomic(cfg_path, cfg.to_dict())
    return run_dir


def _check_same_config(saved: dict, cfg: Config, run_dir: Path, where: str) -> None:
    diff = config_diff(saved, cfg)
    if diff:
        raise ResumeError(f"cannot resume {run_dir}: the config differs from the one in its {where} in "
                          f"{', '.join(diff)}; resume with the run's own values, or start another run_name")


def clear_run(run_dir: str | os.PathLike) -> None:
    """Delete a run's checkpoints, metrics and config (``dotslab train --restart``; hold the lock)."""
    run_dir = Path(run_dir)
    for path in list_checkpoints(run_dir):
        path.unlink(missing_ok=True)
    for name in ("metrics.jsonl", "config.json"):
        (run_dir / name).unlink(missing_ok=True)
    remove_stale_files(run_dir)


# ---- checkpoints ----------------------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    d = Path(run_dir) / CKPT_DIR
    return sorted(d.glob("step-*.pt")) if d.exists() else []


def non_finite_tensor(tensors: Any) -> str | None:
    """Name of the first floating-point tensor in a state dict holding NaN or inf, else None."""
    for name, t in (tensors or {}).items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], *,
                    cfg: Config | None = None) -> Path:
    """Atomically write ``state`` (plus ``cfg``, for resume checks) as the checkpoint of ``step``, then keep
    only the newest ``cfg.keep_checkpoints`` (1 without a cfg). Non-finite ``state['model']`` raises
    NonFiniteWeightsError and writes nothing."""
    bad = non_finite_tensor(state.get("model"))
    if bad is not None:
        raise NonFiniteWeightsError(
            f"the weights are not finite after step {step} (first: {bad}); not checkpointed, so "
            f"{last_checkpoint_text(run_dir)} stays usable; lower learning_rate or max_grad_norm")
    if cfg is not None:
        state = {**state, "config": cfg.to_dict()}
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
        _fsync_dir(d)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    keep = cfg.keep_checkpoints if cfg is not None else 1
    for old in [p for p in list_checkpoints(run_dir) if p != final][::-1][keep - 1:]:
        old.unlink(missing_ok=True)
    return final


def scan_checkpoints(run_dir: str | os.PathLike) -> tuple[tuple[Path, dict[str, Any]] | None, list[str]]:
    """(newest usable checkpoint and its state, or None; a note per newer one that was not usable)."""
    problems: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # torn or corrupt file: fall back to the previous one
            problems.append(f"{path.name} is unreadable ({type(err).__name__})")
            continue
        bad = non_finite_tensor(state.get("model")) if isinstance(state, dict) else None
        if bad is not None:
            problems.append(f"{path.name} holds non-finite weights ({bad})")
            continue
        return (path, state), problems
    return None, problems


def latest_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint with finite weights, and its state; None if there is none."""
    return scan_checkpoints(run_dir)[0]


def load_for_resume(run_dir: str | os.PathLike, cfg: Config) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a resumed run continues from, checked against ``cfg``; None when nothing was
    ever trained in the folder (a fresh start then loses nothing). Raises ResumeError when the folder
    holds traces of training but no usable checkpoint, or when the checkpoint's config differs."""
    run_dir = Path(run_dir)
    found, problems = scan_checkpoints(run_dir)
    if found is None:
        if problems or _metrics_steps(run_dir)[1] > 0:
            raise ResumeError(f"nothing usable to resume in {run_dir}: {describe_run_folder(run_dir, problems)}; "
                              f"start over with dotslab train --restart (or delete the folder)")
        write_json_atomic(run_dir / "config.json", cfg.to_dict())
        return None
    path, state = found
    saved = state.get("config")
    if saved is None and (run_dir / "config.json").exists():  # a checkpoint from before configs were kept
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    if saved is not None:
        _check_same_config(saved, cfg, run_dir, f"checkpoint {path.name}")
    if problems:  # newer files are unusable; the resumed run rewrites their steps
        print(f"dotslab: {'; '.join(problems)}; resuming from {path.name}", file=sys.stderr, flush=True)
        for newer in [p for p in list_checkpoints(run_dir) if p.name > path.name]:
            newer.unlink(missing_ok=True)
    write_json_atomic(run_dir / "config.json", cfg.to_dict())
    return found


DATA_FILE = "data.json"


def data_identity(train_set: Any, eval_set: Any) -> dict[str, Any]:
    """What a run trains and evaluates on: the task's source and the two sets' sizes and fingerprints."""
    return {"source": train_set.source, "train": {"size": len(train_set), "fingerprint": train_set.fingerprint()},
            "eval": {"size": len(eval_set), "fingerprint": eval_set.fingerprint()}}


def check_same_data(run_dir: str | os.PathLike, identity: dict[str, Any], task: str) -> None:
    """Refuse to resume when the run's questions changed since it started (``data.json`` in the folder;
    a folder from before it was written is not checked). Raises ResumeError naming the task."""
    path = Path(run_dir) / DATA_FILE
    if not path.exists():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = [part for part in ("train", "eval") if saved.get(part) != identity[part]]
    if changed:
        what = ", ".join(f"{p} set {saved[p]['size']} questions (fingerprint {saved[p]['fingerprint']}) -> "
                         f"{identity[p]['size']} ({identity[p]['fingerprint']})" for p in changed)
        raise ResumeError(f"the questions of task {task!r} changed since the run in {run_dir} started ({what}); "
                          f"restore the data to resume, or start over with dotslab train --restart")


def write_data_identity(run_dir: str | os.PathLike, identity: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / DATA_FILE, identity)


def _metrics_steps(run_dir: Path) -> tuple[int, int]:
    """(first, last) step among the parsable records of metrics.jsonl; (0, 0) without any."""
    steps = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                steps.append(int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError, TypeError):
                continue
    return (min(steps), max(steps)) if steps else (0, 0)


def describe_run_folder(run_dir: str | os.PathLike, problems: list[str] | None = None) -> str:
    """What a folder holds, for messages: checkpoint files (and why unusable) and metrics steps."""
    run_dir = Path(run_dir)
    files = list_checkpoints(run_dir)
    parts = [f"checkpoints {', '.join(p.name for p in files)}" if files else f"no checkpoint in {CKPT_DIR}/"]
    parts += problems or []
    first, last = _metrics_steps(run_dir)
    parts.append(f"metrics.jsonl with steps {first}-{last}" if (run_dir / "metrics.jsonl").exists()
                 else "no metrics.jsonl")
    return ", ".join(parts)


def last_checkpoint_text(run_dir: str | os.PathLike) -> str:
    """'the last checkpoint is step N (path)' or 'no checkpoint was written yet', without loading it."""
    files = list_checkpoints(run_dir)
    if not files:
        return "no checkpoint was written yet"
    return f"the last checkpoint is step {int(files[-1].stem.split('-')[1])} ({files[-1]})"
