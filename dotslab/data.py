"""Question sets: generation, loading, validation, the held-out split and prompt rendering.

The paper trains on fixed question pools (MATH, DeepScaleR, ...; arXiv 2506.05316 §5) from which
DOTS draws the reference set and the selected batch (§3.1-3.2); this module builds such a pool.

Deviations / decisions:
  1. A built-in arithmetic generator stands in for MATH so a 135M CPU policy sees a spread of
     pass rates; its difficulty knobs (terms, digits) play the role of the paper's difficulty levels.
  2. Every source goes through one row converter, and every malformed row raises :class:`DataError`
     naming the source, the row (``line N`` for JSONL, 1-based; ``row N``, 0-based, otherwise) and
     the field.
  3. The eval set is held out of the pool by a seeded random split; files and HF datasets use all
     rows (``train_size`` applies to generated tasks only).
"""
from __future__ import annotations

import dataclasses

import json
import math
import numbers
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .records import Question

INSTRUCTION = " Give only the final answer as a number."
BOXED_INSTRUCTION = " Reason step by step, and put your final answer within \\boxed{}."
"""For free-form math answers (hub datasets such as MATH/DeepScaleR), scored by math-verify."""
PROMPT_FIELDS = ("prompt", "question", "problem", "input")
ANSWER_FIELDS = ("answer", "final_answer", "solution", "target", "output")
RG_INSTALL_HINT = "pip install reasoning-gym==0.1.25"


class DataError(ValueError):
    """Bad input data; the message names the source, the row and the field."""


class QuestionSet(Sequence[Question]):
    """An ordered, validated set of questions with unique ids."""

    def __init__(self, questions: Iterable[Question], source: str, *,
                 locations: Sequence[str] | None = None, allow_empty: bool = False):
        self._questions = list(questions)
        self.source = source
        where = list(locations) if locations is not None else [f"row {i}" for i in range(len(self._questions))]
        if not self._questions and not allow_empty:
            raise DataError(f"{source}: question set is empty")
        self._index: dict[str, int] = {}
        for i, q in enumerate(self._questions):
            if not isinstance(q, Question):
                raise DataError(f"{source}: {where[i]}: expected a Question, got {type(q).__name__}")
            for name in ("id", "prompt", "answer"):
                value = getattr(q, name)
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{source}: {where[i]}: field '{name}' is empty or not a string")
            if q.id in self._index:
                raise DataError(f"{source}: duplicate id {q.id!r} at {where[self._index[q.id]]} and {where[i]}")
            self._index[q.id] = i

    def __len__(self) -> int:
        return len(self._questions)

    def __getitem__(self, i: int | slice) -> Question | list[Question]:
        return self._questions[i]

    def __repr__(self) -> str:
        return f"QuestionSet({len(self)} questions from {self.source!r})"

    @property
    def ids(self) -> list[str]:
        return [q.id for q in self._questions]

    @property
    def prompts(self) -> list[str]:
        return [q.prompt for q in self._questions]

    @property
    def strata(self) -> np.ndarray:
        """Each question's ``metadata['level']`` (0 when absent), for stratified reference sets; (N,)."""
        return np.array([q.metadata.get("level", 0) for q in self._questions])

    def index_of(self, question_id: str) -> int:
        try:
            return self._index[question_id]
        except KeyError:
            raise KeyError(f"{self.source}: no question with id {question_id!r}") from None

    def by_id(self, question_id: str) -> Question:
        return self._questions[self.index_of(question_id)]

    def subset(self, indices: Iterable[int], *, allow_empty: bool = False) -> QuestionSet:
        return QuestionSet([self._questions[i] for i in indices], self.source, allow_empty=allow_empty)

    def split(self, n_eval: int, seed: int) -> tuple[QuestionSet, QuestionSet]:
        """Return (train, eval): a seeded random ``n_eval`` held out, both kept in original order."""
        if not 0 <= n_eval < len(self):
            raise DataError(f"{self.source}: cannot hold out {n_eval} of {len(self)} questions "
                            f"and keep at least 1 for training")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        held_out = sorted(order[:n_eval])
        return self.subset(sorted(order[n_eval:])), self.subset(held_out, allow_empty=True)


# ---- generators -------------------------------------------------------------------------
def _evaluate(numbers_: Sequence[int], operators: Sequence[str]) -> int:
    """Left-to-right with '*' binding tighter than '+'/'-'."""
    total, sign, run = 0, 1, numbers_[0]
    for op, x in zip(operators, numbers_[1:]):
        if op == "*":
            run *= x
        else:
            total, sign, run = total + sign * run, (1 if op == "+" else -1), x
    return total + sign * run


def arithmetic_questions(n: int, seed: int, *, min_terms: int = 2, max_terms: int = 3, min_digits: int = 1,
                         max_digits: int = 2, operators: str = "+-") -> QuestionSet:
    """n distinct 'What is 7 + 12 - 3?' questions; terms and digits drawn uniformly per question.

    ``level = (terms - 1) + (digits - 1)``: 1 for two 1-digit terms, +1 per extra term or digit.
    """
    source = "arithmetic"
    if not (1 <= min_terms <= max_terms and 1 <= min_digits <= max_digits):
        raise DataError(f"{source}: need 1 <= min_terms <= max_terms and 1 <= min_digits <= max_digits")
    if not operators or set(operators) - set("+-*"):
        raise DataError(f"{source}: operators must be a non-empty subset of '+-*', got {operators!r}")
    rng, seen, questions = random.Random(seed), set(), []
    for _ in range(100 * n + 1000):
        if len(questions) >= n:
            break
        terms, digits = rng.randint(min_terms, max_terms), rng.randint(min_digits, max_digits)
        nums = [rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1) for _ in range(terms)]
        ops = [rng.choice(operators) for _ in range(terms - 1)]
        expression = " ".join([str(nums[0])] + [f"{op} {x}" for op, x in zip(ops, nums[1:])])
        prompt = f"What is {expression}?"
        if prompt in seen:
            continue
        seen.add(prompt)
        meta = {"task": "arithmetic", "terms": terms, "digits": digits,
                "level": (terms - 1) + (digits - 1), "expression": expression}
        questions.append(Question(f"arith-{len(questions):06d}", prompt, str(_evaluate(nums, ops)), meta))
    if len(questions) < n:
        raise DataError(f"{source}: only {len(questions)} distinct questions for n={n}; widen terms/digits")
    return QuestionSet(questions, source)


@dataclasses.dataclass(frozen=True)
class Stratum:
    """One part of :data:`ARITHMETIC_MIX`: :func:`arithmetic_questions` knobs and a share of the questions."""
    name: str
    share: float
    min_terms: int
    max_terms: int
    min_digits: int
    max_digits: int
    operators: str


ARITHMETIC_MIX: tuple[Stratum, ...] = (
    Stratum("echo", 0.15, 1, 1, 1, 2, "+"),          # "What is 42?": near-certain pass
    Stratum("add-1digit", 0.25, 2, 2, 1, 1, "+"),
    Stratum("addsub-1digit", 0.20, 2, 2, 1, 1, "+-"),
    Stratum("addsub-2digit", 0.20, 2, 2, 2, 2, "+-"),
    Stratum("3terms", 0.20, 3, 3, 1, 2, "+-"),
)
"""The ``arithmetic_mix`` task, easy to hard (shares sum to 1), so that adaptive difficulty spreads over
0-1 for SmolLM2-135M as it does for the paper's policies on their pools. Measured difficulty (1 - pass
rate, exact match) of the initial SmolLM2, 64 questions x 4 samples, 24 new tokens, T = 0.6 (benchmark
part 2, 2026-11-26): echo 0.35, add-1digit 0.53, addsub-1digit 0.60, addsub-2digit 0.94, 3terms 0.96;
every benchmark result repeats this measurement. The plain ``arithmetic`` task (2-3 terms of 1-2 digits) is mostly the hard end."""


def _stratum_capacity(s: Stratum) -> int:
    """Number of distinct questions of a stratum (one digit count is drawn per question)."""
    total = 0
    for digits in range(s.min_digits, s.max_digits + 1):
        numbers_ = 10 if digits == 1 else 9 * 10 ** (digits - 1)
        for terms in range(s.min_terms, s.max_terms + 1):
            total += numbers_ ** terms * len(s.operators) ** (terms - 1)
    return min(total, 1_000_000)


def arithmetic_mix_questions(n: int, seed: int, mix: Sequence[Stratum] = ARITHMETIC_MIX) -> QuestionSet:
    """n distinct questions, ``round(share * n)`` per stratum (remainder to the last), shuffled by seed.

    A question's stratum is in ``metadata['stratum']`` and its index in ``metadata['level']``
    (0 = easiest), so the 'stratified' reference strategy and per-stratum pass rates work on it.
    """
    source = "arithmetic_mix"
    counts = [round(s.share * n) for s in mix]
    counts[-1] = n - sum(counts[:-1])
    seen: set[str] = set()
    out: list[Question] = []
    for level, (stratum, count) in enumerate(zip(mix, counts)):
        # generate extra: strata can overlap (e.g. two 1-digit additions), duplicates are skipped
        pool = arithmetic_questions(min(count * 3 + 20, _stratum_capacity(stratum)), seed + 1000 * level,
                                    min_terms=stratum.min_terms, max_terms=stratum.max_terms,
                                    min_digits=stratum.min_digits, max_digits=stratum.max_digits,
                                    operators=stratum.operators)
        taken = 0
        for q in pool:
            if taken == count:
                break
            if q.prompt in seen:
                continue
            seen.add(q.prompt)
            meta = {**q.metadata, "stratum": stratum.name, "level": level}
            out.append(Question(f"mix-{stratum.name}-{taken:04d}", q.prompt, q.answer, meta))
            taken += 1
        if taken < count:
            raise DataError(f"{source}: stratum {stratum.name!r} has only {taken} distinct questions for {count}")
    random.Random(seed).shuffle(out)
    return QuestionSet(out, source)


def _distinct_rg_items(rg: Any, name: str, want: int, seed: int, seen: set[str], kwargs: Mapping[str, Any],
                       source: str) -> list[dict]:
    """The first ``want`` items of generator ``name`` whose question text is new."""
    size = want
    while want:
        try:
            dataset = rg.create_dataset(name, size=size, seed=seed, **kwargs)
        except (ValueError, TypeError) as err:
            raise DataError(f"{source}: cannot create generator {name!r}: {err}") from err
        items, texts = [], set()
        for entry in dataset:
            if entry["question"] not in seen and entry["question"] not in texts:
                texts.add(entry["question"])
                items.append(entry)
                if len(items) == want:
                    return items
        if size >= 4 * want + 64:
            raise DataError(f"{source}: {name!r} gives only {len(items)} distinct questions of {want}; "
                            f"widen its difficulty settings")
        size = 2 * size + 16  # item i depends on (seed, i) only, so a larger size keeps the prefix
    return []


def reasoning_gym_questions(names: str | Sequence[str], n: int, seed: int, **kwargs: Any) -> QuestionSet:
    """n questions from reasoning-gym generators, split evenly across ``names`` (extra go to the first)."""
    try:
        import reasoning_gym
    except ImportError as err:
        raise DataError(f"reasoning_gym is not installed; {RG_INSTALL_HINT}") from err
    names = [names] if isinstance(names, str) else list(names)
    source = "reasoning_gym:" + ",".join(names)
    if not names:
        raise DataError(f"{source}: no generator names given")
    seen: set[str] = set()
    questions = []
    for j, name in enumerate(names):
        items = _distinct_rg_items(reasoning_gym, name, n // len(names) + (j < n % len(names)), seed, seen,
                                   kwargs, source)
        for i, entry in enumerate(items):
            seen.add(entry["question"])
            meta = {**entry.get("metadata", {}), "task": name, "rg_entry": entry}
            questions.append(Question(f"rg-{name}-{i}", entry["question"], str(entry["answer"]), meta))
    return QuestionSet(questions, source)


# ---- files and HF datasets ----------------------------------------------------------------
def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: line {number}: not valid UTF-8 (byte {err.start})") from None
        if not text.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(text)))
        except (ValueError, RecursionError) as err:
            raise DataError(f"{path}: line {number}: invalid JSON: {err}") from None
    return rows


def _read_json(path: Path) -> list[tuple[str, Any]]:
    data = path.read_bytes()
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 (byte {err.start})") from None
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(obj).__name__}")
    return [(f"row {i}", row) for i, row in enumerate(obj)]


def _read_parquet(path: Path) -> list[tuple[str, Any]]:
    import pyarrow
    import pyarrow.parquet
    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read parquet: {err}") from None
    return [(f"row {i}", row) for i, row in enumerate(rows)]


def _read_csv(path: Path) -> list[tuple[str, Any]]:
    import pandas
    try:  # all text: keeps answers like '007' or '1.50' exactly as written
        frame = pandas.read_csv(path, dtype=str, keep_default_na=False)
    except (pandas.errors.ParserError, pandas.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot read CSV: {err}") from None
    return [(f"row {i}", row) for i, row in enumerate(frame.to_dict("records"))]


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}


def _pick_field(explicit: str | None, candidates: Sequence[str], columns: Sequence[str], role: str,
                source: str) -> str:
    for name in [explicit] if explicit is not None else candidates:
        if name in columns:
            return name
    wanted = repr(explicit) if explicit is not None else "any of " + ", ".join(candidates)
    shown = ", ".join(map(repr, columns[:20])) + (", ..." if len(columns) > 20 else "")
    raise DataError(f"{source}: no {role} column ({wanted}); columns found: {shown or 'none'}")


def _as_text(value: Any, field: str, where: str, *, numbers_ok: bool) -> str:
    """A cell as non-empty text; numbers (answers, ids) become '3', '0.5'; ``field`` names it in errors."""
    kinds = "a string or number" if numbers_ok else "a string"
    if value is None:
        raise DataError(f"{where}: field {field} is missing")
    if isinstance(value, bool) or not isinstance(value, str if not numbers_ok else (str, numbers.Real)):
        raise DataError(f"{where}: field {field} must be {kinds}, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        value = str(int(value))
    elif isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise DataError(f"{where}: field {field} is not a finite number: {x}")
        value = str(int(x)) if x.is_integer() and abs(x) < 2 ** 53 else repr(x)
    if not value.strip():
        raise DataError(f"{where}: field {field} is empty")
    return value


def _label(key: str, role: str) -> str:
    return f"'{key}'" if key == role else f"'{key}' ({role})"


def _to_question_set(rows: Sequence[tuple[str, Any]], source: str, prompt_field: str | None,
                     answer_field: str | None, id_field: str | None) -> QuestionSet:
    """The one row converter shared by every file format and by :func:`load_hf`."""
    if not rows:
        raise DataError(f"{source}: question set is empty")
    columns: dict[str, None] = {}
    for where, row in rows:
        if not isinstance(row, Mapping):
            raise DataError(f"{source}: {where}: expected an object with fields, got {type(row).__name__}")
        columns.update(dict.fromkeys(map(str, row)))
    prompt_key = _pick_field(prompt_field, PROMPT_FIELDS, list(columns), "prompt", source)
    answer_key = _pick_field(answer_field, ANSWER_FIELDS, list(columns), "answer", source)
    questions = []
    for i, (where, row) in enumerate(rows):
        at = f"{source}: {where}"
        prompt = _as_text(row.get(prompt_key), _label(prompt_key, "prompt"), at, numbers_ok=False)
        answer = _as_text(row.get(answer_key), _label(answer_key, "answer"), at, numbers_ok=True)
        raw_id = row.get(id_field) if id_field else None
        qid = f"row-{i}" if raw_id is None else _as_text(raw_id, _label(id_field, "id"), at, numbers_ok=True)
        nested = row.get("metadata")  # written by save_jsonl; merged back so files round-trip
        meta = dict(nested) if isinstance(nested, Mapping) else {}
        meta.update((k, v) for k, v in row.items() if k not in (prompt_key, answer_key, id_field)
                    and not (k == "metadata" and isinstance(nested, Mapping)))
        questions.append(Question(qid, prompt, answer, meta))
    return QuestionSet(questions, source, locations=[where for where, _ in rows])


def load_file(path: str | Path, *, prompt_field: str | None = None, answer_field: str | None = None,
              id_field: str | None = "id") -> QuestionSet:
    """Load a .jsonl, .json (list of objects), .parquet or .csv file; non-field columns go to metadata."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        rows = reader(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    return _to_question_set(rows, str(path), prompt_field, answer_field, id_field)


def load_hf(name: str, *, split: str = "train", config_name: str | None = None, prompt_field: str | None = None,
            answer_field: str | None = None, id_field: str | None = "id", **load_kwargs: Any) -> QuestionSet:
    """Load a split via ``datasets.load_dataset`` (hub or local builder) or a ``save_to_disk`` folder."""
    import datasets
    source = f"hf:{name}:{split}"
    folder = Path(name)
    try:
        if folder.is_dir() and any((folder / f).is_file() for f in ("dataset_info.json", "state.json",
                                                                   "dataset_dict.json")):
            dataset = datasets.load_from_disk(str(folder))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name, config_name, split=split, **load_kwargs)
        rows = [(f"row {i}", row) for i, row in enumerate(dataset)]
    except Exception as err:  # datasets raises many unrelated types (hub, FS, builder); report them as data errors
        raise DataError(f"{source}: cannot load dataset: {type(err).__name__}: {err}") from err
    return _to_question_set(rows, source, prompt_field, answer_field, id_field)


def load_task(cfg: Any) -> tuple[QuestionSet, QuestionSet]:
    """(train pool, held-out eval set) for ``cfg.task``; the two are disjoint by id."""
    task, size = cfg.task, cfg.train_size + cfg.eval_size
    if task == "arithmetic":
        full = arithmetic_questions(size, cfg.seed)
    elif task == "arithmetic_mix":
        full = arithmetic_mix_questions(size, cfg.seed)
    elif task.startswith("reasoning_gym:"):
        full = reasoning_gym_questions([s.strip() for s in task[len("reasoning_gym:"):].split(",") if s.strip()],
                                       size, cfg.seed)
    elif task.startswith("hf:"):
        name, _, split = task[len("hf:"):].partition(":")
        full = load_hf(name, split=split or "train")
        full = QuestionSet([dataclasses.replace(q, metadata={"instruction": BOXED_INSTRUCTION, **q.metadata})
                            for q in full], full.source)
    elif Path(task).suffix.lower() in _READERS:
        full = load_file(task)
    else:
        raise DataError(f"unknown task {task!r}: use 'arithmetic', 'arithmetic_mix', 'reasoning_gym:<name>[,<name>]', "
                        f"'hf:<name>[:<split>]' or a {'/'.join(_READERS)} path")
    return full.split(cfg.eval_size, cfg.seed)


def render_prompt(question: Question, tokenizer: Any) -> str:
    """The policy's input text: the chat template when the tokenizer has one, else a plain 'Answer:' cue."""
    instruction = question.metadata.get("instruction", INSTRUCTION)  # per-question override (hub tasks)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": question.prompt + instruction}],
                                             tokenize=False, add_generation_prompt=True)
    return question.prompt + instruction + "\nAnswer:"


def _is_json(value: Any) -> bool:
    try:
        return bool(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return False


def save_jsonl(questions: Iterable[Question], path: str | Path) -> None:
    """Write id/prompt/answer/metadata, one question per line; non-JSON metadata values are dropped."""
    with open(path, "w", encoding="utf-8") as f:
        for q in questions:
            meta = {k: v for k, v in q.metadata.items() if _is_json(v)}
            f.write(json.dumps({"id": q.id, "prompt": q.prompt, "answer": q.answer, "metadata": meta},
                               ensure_ascii=False) + "\n")
