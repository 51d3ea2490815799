"""Feedback while long notebook cells run: a progress line that a saved notebook keeps as text, the
training curves redrawn at every step, and a time estimate from one timed step before a long run.

Not from the paper.

Decisions:
  1. Progress is an output updated in place (IPython ``display_id``), not a widget: tqdm's notebook
     bars are widgets, and a reopened notebook shows "Error displaying widget: model not found" where
     they were. Outside a notebook kernel nothing is drawn.
  2. :class:`LiveCurves` keeps its ``FigureWidget``'s synced state current after every redraw
     (:func:`dotslab.viz.push_widget_state`): a page reloaded or reopened during a run gets the widget
     back (with every record) as soon as the kernel is free, i.e. when the training cell ends, where it
     used to get the empty figure of step 0. Meanwhile :meth:`LiveCurves.watch` follows the run's
     metrics.jsonl from another kernel. :meth:`LiveCurves.finish` puts the static figure in the
     widget's place, which a saved notebook keeps.
  3. :func:`time_first_step` runs step 1 as a run of its own (``total_steps = 1``) in the run's folder;
     the long call resumes it, so the timed step is not repeated. A resumed run reproduces the
     uninterrupted one's metrics (``trainer`` decision 1), except that step 1, the last step of its
     call, also evaluates.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from .config import Config
from .curves import training_figure
from .metrics import read_jsonl
from .viz import BOXED_WIDTH, figure_widget, sync_figure


def format_seconds(seconds: float) -> str:
    """'0.35 s', '2.4 s', '8 s', '3.5 min', '1.2 h' (a step of the miniature is well under a second)."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill), where display() reaches a notebook."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """"desc: k of n · elapsed, about t left", redrawn in place at most twice a second.

    ``on_update(text)`` sends the line elsewhere (a widget's status line) instead of displaying it.
    Called with a metrics record, it counts training steps, so it can be a trainer hook.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "", initial: int = 0,
                 on_update: Callable[[str], None] | None = None, show: bool | None = None, tick: float = 0.0):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = self.initial = int(initial)
        self.on_update = on_update
        self.start = time.perf_counter()
        self._drawn_at = 0.0
        self._handle = None
        self._stop = threading.Event()
        if on_update is None and (in_kernel() if show is None else show):
            from IPython.display import display
            self._handle = display(self._bundle(), raw=True, display_id=True)
        if tick > 0 and (self._handle is not None or on_update is not None):
            # the clock keeps moving while one long call (a batch of rollouts) runs
            threading.Thread(target=self._tick, args=(tick,), daemon=True).start()

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every) and self.done < self.total:
            self._drawn_at = 0.0
            self.update(0)

    def close(self) -> None:
        """Stop the ticking clock (also when the work failed part-way) and draw the line once more."""
        self._stop.set()
        self._drawn_at = 0.0
        self.update(0)

    def text(self) -> str:
        elapsed = time.perf_counter() - self.start
        line = f"{self.desc}: {self.done} of {self.total}{self.unit} · {format_seconds(elapsed)}"
        if self.initial < self.done < self.total:
            left = elapsed / (self.done - self.initial) * (self.total - self.done)
            line += f", about {format_seconds(left)} left"
        return line

    def _bundle(self) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": f"<pre style='margin:0'>{self.text()}</pre>"}

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        now = time.perf_counter()
        if now - self._drawn_at >= 0.5 or self.done >= self.total:
            self._drawn_at = now
            if self.on_update is not None:
                self.on_update(self.text())
            elif self._handle is not None:
                self._handle.update(self._bundle(), raw=True)

    def __call__(self, record: dict[str, Any]) -> None:
        if record.get("time/step") is not None:
            self.update(int(record["step"]) - self.done)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_progress_title(title: str, records: Sequence[dict[str, Any]], total_steps: int | None) -> str:
    """The run's name, then 'step k of N · s a step · about t left' once a step has been logged."""
    steps = [r for r in records if r.get("time/step") is not None]
    if not steps or not total_steps:
        return title
    done = int(steps[-1]["step"])
    per_step = sum(r["time/step"] for r in steps) / len(steps)
    text = f"{title} · step {done} of {total_steps} · {format_seconds(per_step)} a step"
    if done < total_steps:
        text += f" · about {format_seconds(per_step * (total_steps - done))} left"
    return text


class LiveCurves:
    """A trainer hook that redraws :func:`dotslab.curves.training_figure` as records arrive.

    ``show()`` it in the cell that trains, pass it in ``train(cfg, hooks=[live])``, then ``finish()``.
    The title counts steps and estimates the time left.
    """

    def __init__(self, title: str = "", *, total_steps: int | None = None, records: Sequence[dict[str, Any]] = ()):
        self.title, self.total_steps = title, total_steps
        self.records: list[dict[str, Any]] = list(records)
        self.widget = figure_widget(training_figure(self.records, self._title()).update_layout(width=BOXED_WIDTH))
        self._handle = None

    @classmethod
    def for_run(cls, cfg: Config, *, resume: bool = True) -> "LiveCurves":
        """Curves titled with ``cfg``'s run name; when resuming, seeded with the steps already logged."""
        path = cfg.run_dir / "metrics.jsonl"
        return cls(cfg.resolved_run_name, total_steps=cfg.total_steps, records=read_jsonl(path) if resume else ())

    def _title(self) -> str:
        return run_progress_title(self.title, self.records, self.total_steps)

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.redraw()

    def redraw(self) -> None:
        sync_figure(self.widget, training_figure(self.records, self._title()))

    def follow(self, run_dir: str | Path) -> bool:
        """Redraw from a run folder's metrics.jsonl (e.g. a run that another process is writing);
        True if it held new records."""
        records = read_jsonl(Path(run_dir) / "metrics.jsonl")
        changed = len(records) != len(self.records)
        if changed:
            self.records = records
            self.redraw()
        return changed

    @classmethod
    def watch(cls, run_dir: str | Path, *, every: float = 5.0, timeout: float = 24 * 3600) -> "LiveCurves":
        """Curves of the run in ``run_dir``, redrawn from its metrics.jsonl every ``every`` seconds in a
        background thread until the run has logged its last step (or ``timeout``; ``stop()`` ends it).

        A kernel that is training answers a reloaded page only when the cell ends, so the page cannot
        restore the live figure meanwhile; this follows the run from another notebook or console (or a
        headless ``dotslab train``) instead.
        """
        run_dir = Path(run_dir)
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        live = cls(run_dir.name, total_steps=config.get("total_steps"))
        live.follow(run_dir)
        live._stop = threading.Event()

        def poll() -> None:
            deadline = time.monotonic() + timeout
            while not live._stop.wait(every) and time.monotonic() < deadline:
                live.follow(run_dir)
                steps = [r["step"] for r in live.records if r.get("time/step") is not None]
                if steps and live.total_steps and max(steps) >= live.total_steps:
                    break

        live._thread = threading.Thread(target=poll, name=f"watch {run_dir.name}", daemon=True)
        live._thread.start()
        return live

    def stop(self) -> None:
        """End :meth:`watch`'s polling."""
        if getattr(self, "_stop", None) is not None:
            self._stop.set()
            self._thread.join()

    def show(self) -> None:
        from IPython.display import display
        self._handle = display(self.widget, display_id=True)

    def finish(self) -> go.Figure:
        """The final static figure: in place of the shown widget, or displayed here if none was shown."""
        fig = training_figure(self.records, self._title())
        if self._handle is not None:  # a plotly Figure displays itself past display ids: hand over its bundle
            self._handle.update(pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict()), raw=True)
        elif in_kernel():
            from IPython.display import display
            display(fig)
        return fig


@dataclass
class FirstStep:
    """What :func:`time_first_step` measured, and its estimate for the rest of the run."""
    run_dir: Path
    records: list[dict[str, Any]]
    steps_done: int
    seconds_per_step: float
    seconds_left: float
    message: str


def _step0_eval_text(records: Sequence[dict[str, Any]]) -> str:
    """The step-0 held-out evaluation that the first timing includes, as a clause ('' if none ran)."""
    first = next((r for r in records if r.get("step") == 0 and r.get("eval/pass_rate") is not None), None)
    if first is None:
        return ""
    se = first.get("eval/pass_rate_se")
    return (f", and the held-out evaluation before training, {format_seconds(first.get('time/eval') or 0.0)}: "
            f"pass rate {first['eval/pass_rate']:.2f}" + (f" ± {se:.2f}" if se is not None else "")
            + ", the curves' starting point")


def time_first_step(cfg: Config, *, hooks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> FirstStep:
    """Train step 1 of ``cfg`` in its run folder (nothing if steps are logged there already) and
    estimate how long the remaining steps and evaluations take at that pace."""
    from .trainer import train

    started = time.perf_counter()
    with Progress(1, "timing step 1 (loading the model, then one step)", unit=" step") as bar:
        result = train(dataclasses.replace(cfg, total_steps=1), hooks=[*hooks, bar], resume=True, progress=False)
    wall = time.perf_counter() - started
    steps = [r for r in result.records if r.get("time/step") is not None]
    done = int(steps[-1]["step"]) if steps else 0
    per_step = sum(r["time/step"] for r in steps) / len(steps) if steps else float("nan")
    evals = [r["time/eval"] for r in result.records if r.get("time/eval") is not None]
    per_eval = sum(evals) / len(evals) if evals else 0.0
    todo = range(done + 1, cfg.total_steps + 1)
    n_evals = sum(1 for s in todo if cfg.eval_every > 0 and (s % cfg.eval_every == 0 or s == cfg.total_steps))
    left = per_step * len(todo) + per_eval * n_evals
    if done >= cfg.total_steps:
        message = (f"The run in `{result.run_dir}` has all {done} steps already: the next cell only loads it "
                   f"(delete the folder to train again).")
    else:
        evals_too = f" and {n_evals} evaluation{'s' if n_evals > 1 else ''}" if n_evals else ""
        message = (f"Step {done} took **{format_seconds(per_step)}** ({format_seconds(wall)} with loading the "
                   f"model and data{_step0_eval_text(result.records)}). At that pace the remaining "
                   f"**{len(todo)} steps**{evals_too} take about **{format_seconds(left)}** on this machine now.")
        if cfg.uses_selection or cfg.uses_replay:
            message += (" Step 1 is among the slowest: it rolls out a whole batch of fresh questions"
                        + (" and the reference set" if cfg.uses_selection else "") + ", later steps often less.")
    return FirstStep(result.run_dir, result.records, done, per_step, left, message)
