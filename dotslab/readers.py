"""Question sets from files (JSONL, JSON, Parquet, CSV) and from Hugging Face datasets (hub or disk).

The paper trains on fixed pools such as MATH and DeepScaleR (arXiv 2506.05316 §5); these readers
turn any such pool, kept in a file or on the hub, into a validated :class:`~dotslab.data.QuestionSet`.

Deviations / decisions:
  1. Every source goes through one row converter, and every malformed row raises
     :class:`~dotslab.data.DataError` naming the source, the row (``line N`` for JSONL, 1-based;
     ``row N``, 0-based, otherwise) and the field.
  2. Columns other than prompt, answer and id go to the question's metadata (a ``metadata`` object,
     as :func:`~dotslab.data.save_jsonl` writes it, is merged back so files round-trip).
  3. Two columns shape the prompt and the ``auto`` reward (:mod:`dotslab.answers`): ``answer_format``
     (number, text, list or math) and ``instruction`` (text after the prompt). A row's value wins
     over the file's (``load_file(..., answer_format=..., instruction=...)``); empty or null means unset,
     and an unset format is guessed from the gold answer.
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

from .answers import ANSWER_FORMATS
from .data import DataError, QuestionSet
from .records import Question

PROMPT_FIELDS = ("prompt", "question", "problem", "input")
ANSWER_FIELDS = ("answer", "final_answer", "solution", "target", "output")


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


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}


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


def _check_format(value: Any, where: str, name: str = "field 'answer_format'") -> None:
    if value not in ANSWER_FORMATS:
        raise DataError(f"{where}: {name} must be one of {', '.join(ANSWER_FORMATS)}, got {value!r}")


def _answer_style(meta: dict[str, Any], defaults: Mapping[str, str | None], where: str) -> None:
    """Validate the row's 'answer_format' / 'instruction' in place; unset ones take the file's."""
    for key, default in defaults.items():
        value = meta.pop(key, None)
        if value is None or (isinstance(value, str) and not value.strip()):
            value = default
        if value is None:
            continue
        meta[key] = value
        if key == "answer_format":
            _check_format(value, where)
        elif not isinstance(value, str):
            raise DataError(f"{where}: field 'instruction' must be a string, got {type(value).__name__}")


def _to_question_set(rows: Sequence[tuple[str, Any]], source: str, prompt_field: str | None,
                     answer_field: str | None, id_field: str | None, answer_format: str | None = None,
                     instruction: str | None = None) -> QuestionSet:
    """The one row converter shared by every file format and by :func:`load_hf`."""
    if not rows:
        raise DataError(f"{source}: question set is empty")
    if answer_format is not None:
        _check_format(answer_format, source, "answer_format")
    if instruction is not None and not isinstance(instruction, str):
        raise DataError(f"{source}: instruction must be a string, got {type(instruction).__name__}")
    defaults = {"answer_format": answer_format, "instruction": instruction}
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
        _answer_style(meta, defaults, at)
        questions.append(Question(qid, prompt, answer, meta))
    return QuestionSet(questions, source, locations=[where for where, _ in rows])


def load_file(path: str | Path, *, prompt_field: str | None = None, answer_field: str | None = None,
              id_field: str | None = "id", answer_format: str | None = None,
              instruction: str | None = None) -> QuestionSet:
    """Load a .jsonl, .json (list of objects), .parquet or .csv file; non-field columns go to metadata.

    ``answer_format`` / ``instruction`` apply to rows that leave those columns unset (decision 3).
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        rows = reader(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    return _to_question_set(rows, str(path), prompt_field, answer_field, id_field, answer_format, instruction)


def load_hf(name: str, *, split: str = "train", config_name: str | None = None, prompt_field: str | None = None,
            answer_field: str | None = None, id_field: str | None = "id", answer_format: str | None = None,
            instruction: str | None = None, **load_kwargs: Any) -> QuestionSet:
    """Load a split via ``datasets.load_dataset`` (hub or local builder) or a ``save_to_disk`` folder.

    ``answer_format`` / ``instruction`` apply to rows that leave those columns unset (decision 3).
    """
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
    return _to_question_set(rows, source, prompt_field, answer_field, id_field, answer_format, instruction)
