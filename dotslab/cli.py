"""``dotslab train``: run the papermill target ``notebooks/10_train.ipynb`` headlessly.

Not from the paper. Parameters are ``-p key value`` pairs (values parsed as YAML literals), checked
against :class:`dotslab.config.Config` before a kernel starts, so a typo fails in a second.
The executed notebook lands in the run folder next to config, metrics and checkpoints. On a failing
cell the command exits 1 and prints the executed notebook (which shows the error) and the run
folder (which ``--resume`` continues).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .config import Config, ConfigError

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "10_train.ipynb"
NOTEBOOK_ONLY = ("resume", "live_plots")


def parse_params(pairs: list[list[str]]) -> dict:
    return {k: yaml.safe_load(v) for k, v in pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dotslab", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="run notebooks/10_train.ipynb under papermill")
    tr.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="a parameter of the notebook / a Config key, e.g. -p method grpo")
    tr.add_argument("--notebook", default=str(NOTEBOOK), help="notebook to execute (default: %(default)s)")
    tr.add_argument("--output", default=None, help="executed notebook path (default: <run folder>/10_train.ipynb)")
    tr.add_argument("--resume", action="store_true", help="continue the run folder's last checkpoint")
    tr.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    args = ap.parse_args(argv)

    params = parse_params(args.parameter)
    if args.resume:
        params["resume"] = True
    try:
        cfg = Config.from_flat({k: v for k, v in params.items() if k not in NOTEBOOK_ONLY})
    except ConfigError as e:
        print(f"dotslab: bad parameter: {e}", file=sys.stderr)
        return 2
    run_dir = Path(cfg.run_root) / cfg.resolved_run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else run_dir / Path(args.notebook).name
    params.setdefault("live_plots", False)

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    print(f"dotslab: running {args.notebook} -> {output}\ndotslab: run folder {run_dir}", file=sys.stderr)
    try:
        pm.execute_notebook(args.notebook, str(output), parameters=params, kernel_name=args.kernel,
                            cwd=str(Path.cwd()), progress_bar=False, log_output=True)
    except PapermillExecutionError as e:
        print(f"dotslab: training failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
              f"dotslab: executed notebook (shows the error): {output}\n"
              f"dotslab: run folder (resume with --resume and the same -p values): {run_dir}", file=sys.stderr)
        return 1
    print(f"dotslab: done. notebook {output}\ndotslab: run folder {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
