"""``dotslab train``: run the papermill target ``10_train.ipynb`` headlessly.

Not from the paper. Decisions:
  1. The notebook ships inside the package (``dotslab/notebooks/``, copied from the top-level
     ``notebooks/`` folder at build time); a source checkout runs ``notebooks/`` itself.
  2. Parameters are ``-p key value`` pairs, parsed by the key's type (:func:`dotslab.params.parse_value`)
     and layered exactly as the notebook's config cell will layer them (:func:`dotslab.params.resolve`):
     the preset, the explicit values, which preset values they replace, the config and the run folder are
     printed before a kernel starts; a bad key or value exits 2 in about a second.
  3. The command holds the run folder's lock for the whole run (the kernel it starts may write the
     folder); a second writer, ``--resume`` with nothing to resume, or a fresh start on a folder that
     holds a run exit 2 with the reason. ``--restart`` deletes the run's checkpoints and metrics first.
  4. A failing cell exits 1 and prints the executed notebook (which shows the error) and the run
     folder, offering ``--resume`` only when a step was checkpointed. Ctrl-C interrupts the kernel, which
     stops training; the command says where the last checkpoint is and exits 130 (a second Ctrl-C stops
     at once). The task is loaded and checked before a kernel starts (a bad file exits 2 in seconds), and on
     ``--resume`` its questions must be the ones the run started with (``data.json`` in the run folder).
  5. The kernel uses IPC transport (:class:`LocalKernelManager`), so ipykernel's warning about unencrypted
     TCP never prints.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum

from . import checkpoint as ckpt
from .config import Config, ConfigError, config_diff, field_types
from .data import DataError
from .params import notebook_parameters, parse_value, resolve
from .planner import check_pool_size
from .tasks import load_task

NOTEBOOK_NAME = "10_train.ipynb"


class LocalKernelManager(AsyncKernelManager):
    """The kernel of ``dotslab train`` talks over IPC (Unix sockets beside its connection file in Jupyter's
    runtime folder), not TCP: the kernel is local, and over TCP ipykernel warns on every run that its
    traffic is unencrypted (decision 5)."""
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc" if os.name == "posix" else "tcp")


def default_notebook() -> Path:
    """The packaged notebook (an installed wheel), else the source checkout's ``notebooks/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "notebooks" / NOTEBOOK_NAME, here.parent / "notebooks" / NOTEBOOK_NAME):
        if candidate.is_file():
            return candidate
    return here / "notebooks" / NOTEBOOK_NAME


def _say(*lines: str) -> None:
    for line in lines:
        print(f"dotslab: {line}", file=sys.stderr, flush=True)


def _same_kind_runs(cfg: Config) -> list[str]:
    """Run folders under run_root with this method, task and seed, and the keys they differ in."""
    root, own = Path(cfg.run_root), cfg.resolved_run_name
    prefix = own.rsplit("-", 1)[0] + "-"
    out = []
    for folder in sorted(root.glob(f"{prefix}*")) if root.is_dir() else []:
        if folder.name != own and (folder / "config.json").is_file() and ckpt.list_checkpoints(folder):
            import json
            diff = config_diff(json.loads((folder / "config.json").read_text(encoding="utf-8")), cfg)
            out.append(f"{folder} (differs in {', '.join(diff) or 'nothing but its name'})")
    return out


def _interrupt_children() -> None:
    """SIGINT to the kernel(s) this process started (each leads its own process group)."""
    try:
        import psutil
        children = psutil.Process().children()
    except Exception:  # no psutil: the kernel dies with us (its parent poller) instead
        return
    for child in children:
        try:
            os.killpg(os.getpgid(child.pid), signal.SIGINT)
        except OSError:
            continue


def _check_folder(cfg: Config, run_dir: Path, resume: bool) -> str | None:
    """Why this run cannot start in ``run_dir`` (cheap checks, no checkpoint is loaded), or None."""
    files = ckpt.list_checkpoints(run_dir)
    if resume and not files:
        others = _same_kind_runs(cfg)
        hint = ("; runs with the same method, task and seed: " + "; ".join(others)) if others else ""
        return (f"nothing to resume in {run_dir}: {ckpt.describe_run_folder(run_dir)}{hint}; "
                f"run without --resume to start it")
    if not resume and files:
        return (f"{run_dir} already holds a run ({ckpt.describe_run_folder(run_dir)}); continue it with --resume, "
                f"start over with --restart, or choose another run_name")
    return None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dotslab", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help=f"run {NOTEBOOK_NAME} under papermill")
    tr.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="a Config key or a parameter of the notebook, e.g. -p method grpo -p learning_rate 3e-5")
    tr.add_argument("--notebook", default=None, help=f"notebook to execute (default: the packaged {NOTEBOOK_NAME})")
    tr.add_argument("--output", default=None, help="executed notebook path (default: <run folder>/<notebook name>)")
    tr.add_argument("--resume", action="store_true", help="continue the run folder's last checkpoint")
    tr.add_argument("--restart", action="store_true", help="delete the run folder's checkpoints and metrics first")
    tr.add_argument("--dry-run", action="store_true", help="print the config and the run folder, run nothing")
    tr.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.resume and args.restart:
        ap.error("--resume and --restart exclude each other")

    notebook = Path(args.notebook) if args.notebook else default_notebook()
    if not notebook.is_file():
        _say(f"no notebook at {notebook}")
        return 2
    cell, types = notebook_parameters(notebook)
    notebook_only = {k for k in cell if k not in field_types() and k != "preset"}
    try:
        explicit = {key: parse_value(text, key, kind=field_types().get(key) or types.get(key))
                    for key, text in args.parameter}
        resume = bool(args.resume or explicit.get("resume", False))
        if "resume" in cell:
            explicit["resume"] = resume
        if "live_plots" in cell:
            explicit.setdefault("live_plots", False)
        resolved = resolve(cell, explicit, notebook_only=notebook_only)
    except ConfigError as e:
        _say(f"bad parameter: {e}")
        return 2
    cfg = resolved.config
    run_dir = cfg.run_dir
    output = Path(args.output) if args.output else run_dir / notebook.name
    _say(f"notebook {notebook}", *resolved.summary(), f"run folder {run_dir}")
    bad_data = _check_task(cfg, run_dir, resume)
    if bad_data:
        _say(bad_data)
        return 2
    if args.dry_run:
        return 0

    if resume and not ckpt.list_checkpoints(run_dir):  # refuse before the lock creates the folder
        _say(_check_folder(cfg, run_dir, resume))
        return 2
    lock = ckpt.RunLock(run_dir)
    try:
        lock.acquire()
    except ckpt.RunFolderError as e:
        _say(str(e))
        return 2
    try:
        if args.restart:
            ckpt.clear_run(run_dir)
        refusal = _check_folder(cfg, run_dir, resume)
        if refusal:
            _say(refusal)
            return 2
        return _execute(notebook, output, run_dir, explicit, args.kernel, lock)
    finally:
        lock.release()


def _execute(notebook: Path, output: Path, run_dir: Path, params: dict, kernel: str, lock: ckpt.RunLock) -> int:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    papermill_log = logging.getLogger("papermill")
    if _known_keys_filter not in papermill_log.filters:
        papermill_log.addFilter(_known_keys_filter)
    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        _say("interrupting the run (Ctrl-C again to stop at once)")
        _interrupt_children()

    old_env, old_handler = os.environ.get(ckpt.LOCK_ENV), signal.signal(signal.SIGINT, on_sigint)
    os.environ[ckpt.LOCK_ENV] = str(lock.path.resolve())
    _say(f"running {notebook.name} -> {output}")
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=kernel,
                            cwd=str(Path.cwd()), progress_bar=False, log_output=True,
                            kernel_manager_class=f"{__name__}.LocalKernelManager")
    except PapermillExecutionError as e:
        if interrupted or e.ename == "KeyboardInterrupt":
            return _interrupted(run_dir)
        done = ckpt.list_checkpoints(run_dir)
        _say(f"training failed in cell {e.exec_count}: {e.ename}: {e.evalue}",
             f"executed notebook (shows the error): {output}",
             f"run folder (resume with --resume and the same -p values): {run_dir}" if done else
             f"run folder {run_dir}: no step was checkpointed, so there is nothing to resume; fix the cause "
             "above and run the same command again")
        return 1
    except KeyboardInterrupt:
        return _interrupted(run_dir)
    finally:
        signal.signal(signal.SIGINT, old_handler)
        if old_env is None:
            os.environ.pop(ckpt.LOCK_ENV, None)
        else:
            os.environ[ckpt.LOCK_ENV] = old_env
    _say(f"done. notebook {output}", f"run folder {run_dir}")
    return 0


def _check_task(cfg: Config, run_dir: Path, resume: bool) -> str | None:
    """Load the task and check the pool before a kernel starts (a bad file costs no kernel start); on
    ``--resume``, also that its questions are the ones the run started with. The reason, or None."""
    try:
        train_set, eval_set = load_task(cfg)
        check_pool_size(cfg, len(train_set))
        if resume:
            ckpt.check_same_data(run_dir, ckpt.data_identity(train_set, eval_set), cfg.task)
    except DataError as e:
        return f"bad task data (nothing was trained; fix it and run again): {e}"
    except ckpt.ResumeError as e:
        return str(e)
    return None


def _known_keys_filter(record: logging.LogRecord) -> bool:
    """Config keys the notebook does not declare are read by its config cell: no papermill warning."""
    msg = record.getMessage()
    return not (msg.startswith("Passed unknown parameter: ") and msg.split(": ", 1)[1] in field_types())


def _interrupted(run_dir: Path) -> int:
    _say(f"interrupted; {ckpt.last_checkpoint_text(run_dir)}",
         "continue with the same -p values and --resume")
    return 130


if __name__ == "__main__":
    sys.exit(main())
