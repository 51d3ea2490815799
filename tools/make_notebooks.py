"""Writes the teaching notebooks 00, 01, 02, 03 and 20 (outputs empty, stable cell ids).

Run: .venv/bin/python tools/make_notebooks.py   (notebooks/10_train.ipynb: tools/make_train_notebook.py)
Each notebook: title and goals -> `parameters` (literals only) -> cfg -> imports -> idea + call -> picture.
"""
from pathlib import Path

import nbformat as nbf

OUT = Path(__file__).resolve().parent.parent / "notebooks"


def md(text: str):
    return nbf.v4.new_markdown_cell(text.strip("\n"))


def code(text: str):
    return nbf.v4.new_code_cell(text.strip("\n"))


def params(text: str):
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


def write(name: str, cells: list) -> None:
    nb = nbf.v4.new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:2]}-{i:02d}"  # stable ids: rebuilding does not churn the diff
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbf.write(nb, OUT / f"{name}.ipynb")


COMMON = '''
preset: str = "cpu_demo"          # base settings: cpu_demo (SmolLM2 on CPU) | tiny (seconds; tests)
policy: str = "smollm2"           # smollm2 (offline SmolLM2-135M-Instruct) | tiny (random init: scores 0) | HF path
task: str = "arithmetic"          # the texts below describe this task; arithmetic_mix is the main job's
embedder: str = "minilm"          # question encoder: minilm (offline all-MiniLM-L6-v2) | hash (no model) | policy
group_size: int = 4               # G: completions per question; difficulty is measured in steps of 1/G
max_new_tokens: int = 16          # completion length cap (arithmetic answers are short)
seed: int = 0                     # one seed for question sets, reference draws and sampling
'''.strip("\n")

# ---- 00 quickstart -------------------------------------------------------------------------------
write("00_quickstart", [
    md(r'''
# 00 · Quickstart: DOTS + rollout replay in ten minutes

Reinforcement fine-tuning with GRPO spends most of its time **generating completions**, and many of
those completions teach nothing. Sun et al. (arXiv 2506.05316) make each generation count twice over:

1. **Adaptive difficulty.** Measure how hard a question is *for the current policy*.
2. **Prediction.** Roll out only a small *reference set* and predict everyone else's difficulty.
3. **Selection (DOTS).** Train on the questions predicted to be of medium difficulty.
4. **Rollout replay.** Reuse recent groups so fewer fresh completions are needed per step.

**You will see** each idea as a picture on a small question pool, then a short training run with all
four switched on. Defaults take a few minutes on a 2-core CPU with SmolLM2-135M.
'''),
    params(COMMON + '''
train_size: int = 96              # N: questions in the pool
eval_size: int = 16               # held-out probe questions (never references; also the run's eval set)
reference_set_size: int = 8       # K: questions actually rolled out to predict the others
questions_per_step: int = 8       # B: groups per training step
total_steps: int = 10             # steps of the short training run
eval_every: int = 5               # evaluate the held-out pass rate every this many steps
run_root: str = "runs"            # run folders go under this folder
live_plots: bool = True           # live plotly curves while training in JupyterLab'''),
    code('''
from dotslab.config import from_namespace

cfg = from_namespace(globals(), exclude=("live_plots",))
cfg'''),
    code('''
from IPython.display import display

from dotslab.trainer import train
from dotslab.viz import (LiveCurves, difficulty_figure, prediction_figure, replay_share_figure,
                         selection_figure, training_figure)
from dotslab.widgets import open_workbench'''),
    md(r'''
## 1 · Adaptive difficulty

Sample $G$ completions of question $q$ from the current policy and score each $r_i \in \{0, 1\}$.
The **difficulty** is the failure rate

$$d_q = \frac{1}{G}\sum_{i=1}^{G} (1 - r_i), \qquad p_q = 1 - d_q \text{ (pass rate)}.$$

GRPO's advantage is $A_i = r_i - \operatorname{mean}(r)$ (divided by the group's std). A group that is
all right ($d=0$) or all wrong ($d=1$) has $A_i = 0$ for every completion: its $G$ generations were
wasted. The paper's Theorem 1: the expected squared gradient norm grows with
$p(1-p)\,(1 - 1/G)$, largest at $d = 0.5$.

Below: the held-out probe questions rolled out $G$ times each under the untrained policy.
'''),
    code('''
wb = open_workbench(cfg)
probe_difficulty = wb.labeler(wb.probe)
difficulty_figure(probe_difficulty, cfg.grpo.group_size)'''),
    md(r'''
## 2 · Predicting difficulty from a reference set

Measuring every question costs $N \cdot G$ generations. Instead roll out only $K$ **reference
questions** and let every other question attend to them by similarity of their embeddings $e$:

$$\hat d_q = \sum_{i=1}^{K} a_{qi}\, y_i, \qquad a_{q} = \operatorname{softmax}_i\!\big(s(e_q, e_i)/\tau_{att}\big),$$

where $y_i$ is reference $i$'s measured difficulty. Before the trainer has labels to fit its adapters,
$s$ is the cosine similarity (with $\tau = 0.1$); later it is the learned $f_Q(e_q)\cdot f_R(e_i)/\sqrt{h}$.
The probes were never references, so the scatter below is an honest test of the prediction.
Early in a run the untrained predictor mostly *ranks*: predictions crowd around the references' mean
(an average of a few labels can't reach 0 or 1). Selection only needs the order near $\alpha$, and the
trainer's adapter, fitted online on the labels every round produces, spreads them out later.
'''),
    code('''
round_ = wb.predict(wb.reference_set())
prediction_figure(round_.probe_prediction, probe_difficulty, wb.probe.prompts)'''),
    md(r'''
## 3 · Selecting questions (DOTS)

Every question of the pool gets a selection probability that peaks at the **target difficulty**
$\alpha$:

$$P(q) = \frac{\exp(-|\hat d_q - \alpha| / \tau)}{\sum_{q'} \exp(-|\hat d_{q'} - \alpha| / \tau)},$$

and a round's questions are drawn from $P$ without replacement. With the paper's $\tau = 10^{-3}$ this
is "the questions predicted closest to $\alpha$". The bars are the pool by predicted difficulty; the
red line is where the probability mass goes. (Notebook 03 moves $\alpha$ and $\tau$.)
'''),
    code('''
sel = cfg.selection
selection_figure(round_.pool_prediction, sel.target_difficulty, sel.selection_temperature)'''),
    md(r'''
## 4 · Rollout replay, and a short run

After the first round, each step generates only $\delta B$ fresh groups and fills the rest of the
batch with groups replayed from a FIFO buffer of recent ones (only groups with reward spread).
Replayed tokens were sampled by an older policy $\mu$, so the loss corrects with
$\rho_t = \pi_\theta / \mu$ and clips around $c_t = \pi_{old}/\mu$:

$$\ell_t = \max\!\big(-A\,\rho_t,\; -A\,\operatorname{clip}(\rho_t, c_t(1-\varepsilon), c_t(1+\varepsilon))\big).$$

Now train `dots_rr` (DOTS + replay) for a few steps. The run folder is named from the config, and the
run resumes it, so running this cell again with the same parameters reuses the finished run.
'''),
    code('''
live = LiveCurves(cfg.resolved_run_name) if live_plots else None
if live is not None:
    display(live.widget)
result = train(cfg, hooks=[live] if live else [], resume=True)
print("run folder:", result.run_dir)'''),
    code('training_figure(result.records, title=cfg.resolved_run_name)'),
    md(r'''
**What we saw** with the defaults (SmolLM2, 10 steps): the train-batch pass rate rose from about 0.3
to 0.5-0.75, because DOTS keeps choosing questions the policy partly solves; the held-out pass rate
stayed flat (0.19, 0.19, 0.16 on 16 questions, inside the noise of 32 completions). Ten steps of
4-8 groups are far too little to change a policy: this run shows the mechanics, not the gain. The
share of groups with no reward spread went *up* (to 1.0 at the end): the selected questions came back
all solved or all failed, the waste DOTS exists to avoid, and the predictor's Pearson on 4 fresh
questions a step swings between -1 and 1. Longer runs and method comparisons: `10_train`, `20_compare`.
'''),
    md(r'''
Fresh against replayed groups per step: round 0 (the first $\mu$ steps) is all fresh, then about
half of each batch is replayed, when the buffer holds enough groups with reward spread.
'''),
    code('replay_share_figure(result.records)'),
    md(r'''
**Next:** `01_reference_set` (how the reference set changes prediction quality), `02_attention`
(what the predictor attends to), `03_selection_and_replay`, `10_train` (full runs) and `20_compare`.
'''),
])

# ---- 01 reference set ----------------------------------------------------------------------------
write("01_reference_set", [
    md(r'''
# 01 · The reference set: which questions should we roll out?

Each round DOTS rolls out only $K$ reference questions and predicts the difficulty of all the others
from them. Which $K$ questions, and how many, decides how good that prediction is.

- **random** (the paper): $K$ questions uniformly.
- **diverse**: greedy farthest-point in embedding space, so the references cover the pool.
- **stratified**: proportional to the pool's difficulty levels (here: number of terms and digits).

**You will see** predicted against measured difficulty on a held-out **probe set** (questions that are
never references, so they cannot read their own label back), scored by Pearson $r$, Spearman $\rho$ and
$\mathrm{MAE} = \frac{1}{P}\sum_q |\hat d_q - d_q|$. Change strategy, $K$ or seed, or add and remove
questions by hand, and the scatter and the quality history redraw at once.
'''),
    params(COMMON + '''
train_size: int = 96              # N: pool the reference set is drawn from
eval_size: int = 24               # P: held-out probe questions, measured once, never references
reference_set_size: int = 8       # K shown first
reference_strategy: str = "random"  # random | diverse | stratified, shown first
sweep_sizes: str = "4,8,16"       # K values compared across all strategies (each new reference costs G rollouts)'''),
    code('''
from dotslab.config import from_namespace

cfg = from_namespace(globals(), exclude=("sweep_sizes",))
cfg'''),
    code('''
from dotslab.viz import quality_sweep_figure
from dotslab.widgets import ReferenceSetPicker, open_workbench'''),
    md(r'''
## Measure the probe set

Each probe question is rolled out $G$ times under the current policy: $d_q = 1 - p_q$ in steps of $1/G$.
These are the "true" labels the predictions are scored against (themselves noisy: with $G = 4$ a
question of true pass rate 0.5 shows $d \in \{0, 0.25, \dots, 1\}$).
'''),
    code('''
wb = open_workbench(cfg)
probe_difficulty = wb.labeler(wb.probe)
print(f"probe set: {len(wb.probe)} questions, mean d = {probe_difficulty.mean():.2f}, "
      f"{((probe_difficulty > 0) & (probe_difficulty < 1)).mean():.0%} with 0 < d < 1")'''),
    md(r'''
## Pick a reference set

References are rolled out on demand (each question once; the policy does not change here). The
predictor is the one a trainer starts with: attention over cosine similarity, then an affine
correction fitted on the references (leave-one-out). Manual edits survive until you move strategy,
$K$ or seed.
'''),
    code('''
picker = ReferenceSetPicker.from_workbench(wb, probe_difficulty)
picker.widget'''),
    md(r'''
## Strategy and size, side by side

The same measurement for every strategy at several $K$ (one seed; with small $P$ the numbers are
noisy, so look for trends rather than decimals). Executed notebooks keep this static figure even
though widget state is not saved.
'''),
    code('''
sizes = [int(k) for k in sweep_sizes.split(",")]
quality_sweep_figure(picker.sweep(sizes))'''),
    code('picker.snapshot()'),
    md(r'''
**What to look for.** Do not expect tidy curves here. With $P$ = 24 probes, most of them at $d = 1$
for a 135M policy, the standard error of a Pearson $r$ is about $(1 - r^2)/\sqrt{P - 1} \approx 0.2$:
larger than the gaps between strategies, so the lines cross and need not rise with $K$ (two runs of
this notebook with different decoding lengths ranked the strategies differently). Before believing a
strategy is better, move the seed in the picker and watch the history panel. The paper's finding
($K$ = 128 as good as 256 of ~10k questions, $r \approx 0.7$ with a trained adapter) lives at a scale
where these error bars shrink. A reference set whose difficulties are all equal predicts a constant
and has no correlation at all.
'''),
])

# ---- 02 attention --------------------------------------------------------------------------------
write("02_attention", [
    md(r'''
# 02 · Attention: what does a prediction look at?

The predicted difficulty of a query $q$ is a weighted average of the reference set's measured
difficulties $y_i$:

$$\hat d_q = \sum_{i=1}^{K} a_{qi}\, y_i, \qquad a_{qi} = \frac{\exp(s_{qi}/\tau)}{\sum_{j}\exp(s_{qj}/\tau)}.$$

Here $s_{qi} = \cos(e_q, e_i)$, the score of the untrained predictor that picks a trainer's first
batches (the trained one uses $f_Q(e_q)\cdot f_R(e_i)/\sqrt{h}$ instead; the softmax is the same).

**You will see** the top references of one query with their weights and difficulties, a heatmap of
attention over a batch of queries, and how the temperature $\tau$ moves between "copy the nearest
reference" ($\tau \to 0$) and "predict the mean label for everyone" ($\tau \to \infty$).
'''),
    params(COMMON + '''
train_size: int = 96              # N: pool the references are drawn from
eval_size: int = 12               # queries: held-out questions, also rolled out to compare d̂ with d
reference_set_size: int = 16      # K: references the queries attend to
reference_strategy: str = "diverse"  # random | diverse | stratified
raw_attention_temperature: float = 0.1  # τ shown first (the trainer's untrained path uses 0.1)
top_references: int = 8           # references listed for the chosen query'''),
    code('''
from dotslab.config import from_namespace

cfg = from_namespace(globals(), exclude=("raw_attention_temperature", "top_references"))
cfg'''),
    code('''
from dotslab.widgets import AttentionExplorer, open_workbench'''),
    md(r'''
## Roll out the references and the queries

References need their measured $y_i$; the queries are measured too, only to compare $\hat d_q$ with $d_q$.
'''),
    code('''
wb = open_workbench(cfg)
refs = wb.reference_set()
ref_difficulty = wb.label_pool(refs)
query_difficulty = wb.labeler(wb.probe)
explorer = AttentionExplorer(wb.probe.prompts, wb.probe_emb, [wb.pool.prompts[i] for i in refs],
                             wb.pool_emb[refs], ref_difficulty, query_difficulty,
                             temperature=raw_attention_temperature, top=top_references)
explorer.widget'''),
    md(r'''
## One query, its top references

The table lists the references with the largest $a_{qi}$ and their contribution $a_{qi}\,y_i$; the
prediction is the sum of that column over **all** $K$ references.

Look at *which* references win. With SmolLM2 the first query, "What is 1 + 5 - 7?", put half its
weight on "What is 4 + 1 + 7?": a sentence encoder's cosine sees the **format** (three 1-digit terms)
before anything else. On this toy task format is much of the difficulty (more digits and terms are
harder), so copying format-neighbours works. On MATH-style questions it does not: plain attention over
raw embeddings reached Pearson $r$ of only 0.07-0.27 with difficulty (paper, Table 8), against
0.70-0.78 with the trained adapters $f_Q, f_R$.
'''),
    code('explorer.table_frame()'),
    code('explorer.snapshot("bars")'),
    md(r'''
## How the temperature changes it

*Effective references* $1/\sum_i a_{qi}^2$ counts how many references share the weight: 1 when one
reference takes it all, $K$ when attention is uniform. Too low a $\tau$ copies one noisy label
(each $y_i$ is a pass rate over only $G$ completions); too high a $\tau$ washes every query out to the
mean. Which side wins depends on how noisy the labels are and how much neighbours share difficulty:
in our run (12 queries, a small sample) the sharpest attention predicted best, Pearson about 0.9 at
$\tau = 0.01$ against 0.5 at $\tau = 2$.
'''),
    code('explorer.sweep([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0])'),
    code("explorer.snapshot()"),
])

# ---- 03 selection and replay ---------------------------------------------------------------------
write("03_selection_and_replay", [
    md(r'''
# 03 · Selection and replay

**Selection.** DOTS turns predicted difficulties into a sampling distribution over the pool,

$$P(q) \propto \exp\!\big(-|\hat d_q - \alpha| / \tau\big),$$

drawn without replacement. $\alpha$ is the target difficulty (0.5 maximises the gradient signal
$p(1-p)$); $\tau$ sets how strictly: $\tau = 10^{-3}$ (the paper) takes the questions nearest to $\alpha$,
$\tau \approx 1$ is nearly uniform.

**Replay.** A FIFO buffer of capacity $C$ keeps recent groups. After round 0 each step generates
$\delta B$ fresh groups and replays up to $(1-\delta) B$ groups from the buffer: only the newest group of
each question, and only groups with reward spread (the others have zero advantage).

**You will see** $P(q)$ move with $\alpha$ and $\tau$, the buffer's contents and ages at the end of a
short `dots_rr` run, and the fresh vs replayed share of every step.
'''),
    params(COMMON + '''
method: str = "dots_rr"           # dots_rr (selection + replay) | rr (uniform + replay)
train_size: int = 96              # N: pool
eval_size: int = 8                # held-out questions (not used for training)
reference_set_size: int = 8       # K: references behind the predicted difficulties
questions_per_step: int = 8       # B: groups per step
fresh_fraction: float = 0.5       # δ: fresh share of a step's groups after round 0
buffer_capacity: int = 8          # C: buffer capacity in groups (paper: C = B)
target_difficulty: float = 0.5    # α shown first
selection_temperature: float = 0.001  # τ shown first (paper 1e-3)
total_steps: int = 8              # steps of the run whose buffer is shown
eval_every: int = 0               # no held-out evaluation: this run is about the buffer
run_root: str = "runs"            # run folders go under this folder'''),
    code('''
from dotslab.config import from_namespace

cfg = from_namespace(globals())
cfg'''),
    code('''
from dotslab.report import buffer_contents
from dotslab.trainer import train
from dotslab.viz import replay_buffer_figure, replay_share_figure, selection_figure
from dotslab.widgets import SelectionExplorer, open_workbench'''),
    md(r'''
## The DOTS distribution over predicted difficulty

Predicted difficulties $\hat d$ for the whole pool from one reference set (as a trainer's first round).
The ticks at the bottom are one draw of $\mu B$ questions (a round's worth).
'''),
    code('''
wb = open_workbench(cfg)
round_ = wb.predict(wb.reference_set())
sel = cfg.selection
explorer = SelectionExplorer(round_.pool_prediction, sel.steps_per_round * cfg.grpo.questions_per_step,
                             target_difficulty=sel.target_difficulty, temperature=sel.selection_temperature,
                             seed=cfg.seed)
explorer.widget'''),
    md(r'''
The same pool at a few settings (static, survives a saved notebook). With a small policy most
questions are predicted hard ($\hat d$ near 1), so with $\alpha = 0.5$ DOTS takes the easiest of them.
'''),
    code('''
for alpha, tau in ((sel.target_difficulty, sel.selection_temperature), (sel.target_difficulty, 0.1), (0.8, 0.1)):
    selection_figure(round_.pool_prediction, alpha, tau).show()'''),
    md(r'''
## A short run, then the buffer

The run resumes its folder (named from the config), so re-running reuses a finished run. Its last
checkpoint holds the buffer: each dot is a group, by age in steps and pass rate. Hollow dots cannot be
replayed: no reward spread ($p \in \{0, 1\}$) or a newer group of the same question exists.

With $C = B$ (the authors' code) each step keeps the newest $C - \delta B$ groups and appends $\delta B$
fresh ones, so the buffer only ever holds the last two steps (ages 0 and 1 here) and a replayed group is
1-2 steps old: stale enough to need the importance ratio, fresh enough to keep it near 1. Raise
`buffer_capacity` to see older groups and a larger replayable share.
'''),
    code('''
result = train(cfg, resume=True)
buffer = buffer_contents(result.run_dir)
replay_buffer_figure(buffer["age"], buffer["pass_rate"], buffer["replayable"], buffer["question"])'''),
    code('buffer'),
    md(r'''
## Fresh vs replayed per step

Round 0 ($\mu$ = `steps_per_round` steps) is all fresh. Afterwards a step generates $\delta B$ fresh
groups and asks the buffer for the rest; grey is the **shortfall** when too few groups with reward
spread were buffered (never waited on). The right panel is the age of what was replayed: a stale
group needs more importance correction.
'''),
    code('replay_share_figure(result.records)'),
])

# ---- 20 compare ----------------------------------------------------------------------------------
write("20_compare", [
    md(r'''
# 20 · Compare runs: time to target

The paper's headline (Table 1) is **how much sooner a method reaches the baseline's accuracy**,
counted in wall-clock and in generated completions (reference rollouts included):

$$\text{ratio} = \frac{t_{\text{method}}(\text{target})}{t_{\text{GRPO}}(\text{target})}, \qquad
\text{target} = \text{GRPO's final held-out pass rate},$$

so a ratio of 0.6 means 40% less time. **You will see** held-out pass rate against seconds and
against rollouts for every run folder that matches the glob, and the table behind the ratios.
Make runs with `10_train` or `dotslab train -p method grpo -p target_pass_rate 0.3` (one per method and
seed, same everything else).
'''),
    params('''
runs_glob: str = "runs/*,../runs/*"  # comma-separated globs of run folders (config.json + metrics.jsonl)
baseline: str = "grpo"            # method whose runs define the target and the ratios' denominator
target_pass_rate: float = 0.0     # 0: the baseline's mean final eval pass rate (paper Table 1)'''),
    code('''
from dotslab.report import compare_runs, load_runs
from dotslab.viz import comparison_figure'''),
    code('''
runs = load_runs(runs_glob)
if not runs:
    raise FileNotFoundError(f"no run folders match {runs_glob!r}; train some with notebooks/10_train.ipynb")
table, target = compare_runs(runs, baseline=baseline, target=target_pass_rate)
print(f"{len(runs)} runs; target pass rate {target:.3f}")'''),
    md(r'''
## Pass rate against wall-clock and against rollouts

The dashed line is the target. A method that saves rollouts but spends them on reference sets
shows it here: the right panel counts **every** generation.

Compare wall-clock only between runs made on the same machine under the same load. Two 6-step runs
of ours on a shared 2-core box took 113 s and 13 s per step for the same amount of work, because other
jobs were running during the first; the rollouts panel does not depend on load.
'''),
    code('comparison_figure({name: records for name, (cfg, records) in runs.items()}, target,\n'
         '                  groups={name: cfg["method"] for name, (cfg, records) in runs.items()})'),
    md(r'''
## The table

`step / seconds / generations to target`: the first evaluation at or above the target (NaN: never
reached). Ratios below 1 beat the baseline. On a CPU with a few steps the numbers are noisy; the
paper averaged 3 seeds.
'''),
    code('table'),
])
