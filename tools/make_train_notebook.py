"""Writes notebooks/10_train.ipynb (outputs empty). Run: .venv/bin/python tools/make_train_notebook.py"""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
params = code('''\
preset: str = "cpu_demo"          # base settings: cpu_demo (SmolLM2 on CPU), tiny (tests), paper
method: str = "dots_rr"           # grpo | dots | rr | dots_rr  (the paper's ablations are this one switch)
policy: str = "smollm2"           # smollm2 (offline SmolLM2-135M-Instruct) | tiny | an HF id or local path
task: str = "arithmetic_mix"      # arithmetic_mix | arithmetic | reasoning_gym:<name>[,<name>] | a .jsonl/.parquet path | hf:<dataset>
total_steps: int = 24             # training steps
train_size: int = 256             # questions in the training pool (generated tasks)
eval_size: int = 48               # held-out questions for eval/pass_rate
eval_every: int = 6               # evaluate every this many steps (0: never)
seed: int = 0                     # one seed for everything; same seed on CPU -> same run
run_root: str = "runs"            # run folders are created under this folder
run_name: str = ""                # empty: derived from the config (method-task-seed-hash)
resume: bool = False              # continue the run folder's last checkpoint
live_plots: bool = True           # live plotly curves in JupyterLab (headless runs save static figures)''')
params.metadata["tags"] = ["parameters"]
cells = [
    md("# 10 · Train: DOTS + rollout replay on GRPO\n\n"
       "The papermill target of `dotslab train`. It builds the frozen `Config` from the parameters below, "
       "trains, and leaves everything in `runs/<run_name>/`: `config.json`, `metrics.jsonl`, "
       "`checkpoints/`, `curves.html` and `curves.png`.\n\n"
       "**You will see** the held-out pass rate move, how many groups had no reward spread (those teach "
       "nothing), and where each step's time goes. Any `Config` key can be passed as a parameter "
       "(`dotslab train -p method grpo -p group_size 8`); unknown keys fail before training starts."),
    params,
    code("from dotslab.config import from_namespace\n\n"
         "cfg = from_namespace(globals(), exclude=(\"resume\", \"live_plots\"))\ncfg"),
    code("from IPython.display import display\n\n"
         "from dotslab.trainer import train\n"
         "from dotslab.viz import LiveCurves, save_run_figures, training_figure\n"
         "from dotslab.report import run_summary"),
    md("## Train\n\nEach step: pick questions (DOTS: near difficulty $\\alpha$), roll out $G$ completions, "
       "score them, mix in replayed groups, update. With `live_plots` the figure below redraws every step."),
    code("live = LiveCurves(cfg.resolved_run_name) if live_plots else None\n"
         "if live is not None:\n    display(live.widget)\n"
         "# headless (papermill): a text progress bar on stderr, which `dotslab train` shows in the terminal\n"
         "result = train(cfg, hooks=[live] if live else [], resume=resume, progress=True if live else \"text\")\n"
         "print(\"run folder:\", result.run_dir)"),
    md("## Results\n\nStatic figures are saved in the run folder (executed notebooks don't keep widget state)."),
    code("paths = save_run_figures(result.run_dir, result.records, title=cfg.resolved_run_name)\n"
         "print(*paths, sep=\"\\n\")\n"
         "run_summary(result.records)"),
    code("training_figure(result.records, title=cfg.resolved_run_name)"),
]
nb = nbf.v4.new_notebook(cells=cells)
for i, cell in enumerate(nb.cells):
    cell.id = f"10-{i:02d}"  # stable ids: rebuilding does not churn the diff
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/10_train.ipynb")
