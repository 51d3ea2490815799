"""Question sets: generation, validation messages, splits, loaders and prompt rendering.

Run: .venv/bin/python -m pytest tests/test_data.py -q
"""
from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dotslab.answers import INSTRUCTIONS
from dotslab.data import (ARITHMETIC_MIX, DataError, QuestionSet, arithmetic_mix_questions, arithmetic_questions,
                          reasoning_gym_questions, render_prompt, save_jsonl)
from dotslab.readers import load_file, load_hf
from dotslab.tasks import load_task
from dotslab.records import Question

ROWS = [{"id": i, "question": f"What is {i} + 1?", "answer": i + 1, "level": i % 3} for i in range(6)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cfg(task, train_size=6, eval_size=2, seed=0):
    return SimpleNamespace(task=task, train_size=train_size, eval_size=eval_size, seed=seed)


# ---- generator ---------------------------------------------------------------------------
def test_arithmetic_is_deterministic_in_seed():
    a, b, c = arithmetic_questions(50, 1), arithmetic_questions(50, 1), arithmetic_questions(50, 2)
    assert list(a) == list(b)
    assert a.prompts != c.prompts


def test_arithmetic_answers_and_shape():
    qs = arithmetic_questions(200, 0, operators="+-*", max_terms=4)
    for q in qs:
        expression = q.metadata["expression"]
        assert q.prompt == f"What is {expression}?"
        assert int(q.answer) == eval(expression)  # trusted: we built the string
        assert q.metadata["task"] == "arithmetic"
    assert qs[0].id == "arith-000000"
    assert len(set(qs.prompts)) == len(qs)  # no duplicate prompts


def test_arithmetic_spreads_levels():
    qs = arithmetic_questions(300, 0, min_terms=2, max_terms=4, min_digits=1, max_digits=3)
    levels = Counter(q.metadata["level"] for q in qs)
    assert set(levels) == {1, 2, 3, 4, 5}  # (terms-1)+(digits-1) over the whole range
    assert min(levels.values()) >= 10  # each level is actually represented
    for q in qs:
        assert q.metadata["level"] == (q.metadata["terms"] - 1) + (q.metadata["digits"] - 1)


def test_arithmetic_too_many_for_range():
    with pytest.raises(DataError, match="distinct"):
        arithmetic_questions(500, 0, min_terms=2, max_terms=2, max_digits=1, operators="+")


# ---- QuestionSet validation --------------------------------------------------------------
def test_empty_set_raises():
    with pytest.raises(DataError, match="src: question set is empty"):
        QuestionSet([], "src")


def test_duplicate_ids_name_both_rows():
    qs = [Question("a", "p", "1"), Question("b", "p", "1"), Question("a", "q", "2")]
    with pytest.raises(DataError, match=r"duplicate id 'a' at row 0 and row 2"):
        QuestionSet(qs, "src")


def test_duplicate_ids_in_jsonl_name_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "prompt": "a", "answer": 1}, {"id": 1, "prompt": "b", "answer": 2}])
    with pytest.raises(DataError, match=r"duplicate id '1' at line 1 and line 2"):
        load_file(path)


def test_empty_prompt_names_line_and_field(tmp_path):
    rows = [{"prompt": "a", "answer": 1}, {"prompt": "b", "answer": 2}, {"prompt": "  ", "answer": 3}]
    path = write_jsonl(tmp_path / "e.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_file(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value) and "'prompt'" in str(err.value)


def test_empty_prompt_in_csv_names_row(tmp_path):
    path = tmp_path / "e.csv"
    pd.DataFrame({"prompt": ["a", "b", "c", ""], "answer": ["1", "2", "3", "4"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 3: field 'prompt' is empty"):
        load_file(path)


def test_question_set_names_row_and_field():
    qs = [Question(str(i), "p", "1") for i in range(3)] + [Question("3", " ", "1")]
    with pytest.raises(DataError, match=r"src: row 3: field 'prompt' is empty"):
        QuestionSet(qs, "src")


def test_bad_cells_name_the_source_column(tmp_path):
    rows = [{"question": "a", "answer": 1}, {"question": "", "answer": 2}]
    with pytest.raises(DataError, match=r"line 2: field 'question' \(prompt\) is empty"):
        load_file(write_jsonl(tmp_path / "c.jsonl", rows))
    rows = [{"prompt": "a", "answer": True}]
    with pytest.raises(DataError, match=r"line 1: field 'answer' must be a string or number, got bool"):
        load_file(write_jsonl(tmp_path / "c.jsonl", rows))
    rows = [{"prompt": "a", "answer": float("nan")}]
    with pytest.raises(DataError, match=r"line 1: field 'answer' is not a finite number"):
        load_file(write_jsonl(tmp_path / "c.jsonl", rows))


def test_missing_answer_column_names_file_and_columns(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "reply": 1, "notes": "x"}])
    with pytest.raises(DataError) as err:
        load_file(path)
    msg = str(err.value)
    assert str(path) in msg and "no answer column" in msg
    assert "'prompt'" in msg and "'reply'" in msg and "'notes'" in msg


def test_missing_answer_value_names_row(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "answer": 1}, {"prompt": "b"}])
    with pytest.raises(DataError, match=r"line 2: field 'answer' is missing"):
        load_file(path)


def test_non_utf8_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": 1}\n{"prompt": "\xff\xfe", "answer": 2}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid UTF-8"):
        load_file(path)


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": 1}\n\n{"prompt": "b", "answer": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3: invalid JSON"):
        load_file(path)


def test_non_object_row_and_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"line 1: expected an object"):
        load_file(write_jsonl(tmp_path / "l.jsonl", [[1, 2]]))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="is empty"):
        load_file(tmp_path / "empty.jsonl")


def test_unsupported_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unsupported file type"):
        load_file(tmp_path / "x.txt")
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "x.jsonl")


# ---- QuestionSet behaviour ---------------------------------------------------------------
def test_sequence_api_and_split():
    qs = arithmetic_questions(20, 0)
    assert isinstance(qs[2], Question) and qs[1:3] == [qs[1], qs[2]]
    assert qs.index_of(qs[5].id) == 5 and qs.by_id(qs[5].id) is qs[5]
    assert [q.id for q in qs.subset([3, 1])] == [qs[3].id, qs[1].id]
    train, held = qs.split(5, seed=3)
    assert len(train) == 15 and len(held) == 5
    assert not set(train.ids) & set(held.ids) and set(train.ids) | set(held.ids) == set(qs.ids)
    assert held.ids == qs.split(5, seed=3)[1].ids  # deterministic
    assert len(qs.split(0, seed=0)[1]) == 0
    with pytest.raises(DataError, match="keep at least 1"):
        qs.split(20, seed=0)


# ---- loaders -----------------------------------------------------------------------------
def check_rows(qs):
    assert len(qs) == 6
    assert qs.ids == [str(i) for i in range(6)]
    assert qs[2].prompt == "What is 2 + 1?" and qs[2].answer == "3"
    assert qs[2].metadata["level"] in (2, "2")


def test_load_jsonl_json_parquet_csv(tmp_path):
    check_rows(load_file(write_jsonl(tmp_path / "q.jsonl", ROWS)))
    (tmp_path / "q.json").write_text(json.dumps(ROWS))
    check_rows(load_file(tmp_path / "q.json"))
    pd.DataFrame(ROWS).to_parquet(tmp_path / "q.parquet")
    check_rows(load_file(tmp_path / "q.parquet"))
    pd.DataFrame(ROWS).to_csv(tmp_path / "q.csv", index=False)
    check_rows(load_file(tmp_path / "q.csv"))


def test_field_options_and_number_answers(tmp_path):
    rows = [{"problem": "p1", "target": 3.0, "solution": "long"}, {"problem": "p2", "target": 0.5}]
    qs = load_file(write_jsonl(tmp_path / "f.jsonl", rows), answer_field="target")
    assert qs.ids == ["row-0", "row-1"] and [q.answer for q in qs] == ["3", "0.5"]
    assert qs[0].metadata == {"solution": "long"}
    with pytest.raises(DataError, match=r"no prompt column \('text'\); columns found: 'problem'"):
        load_file(tmp_path / "f.jsonl", prompt_field="text")


def test_save_jsonl_round_trips(tmp_path):
    qs = arithmetic_questions(5, 0)
    save_jsonl(qs, tmp_path / "s.jsonl")
    back = load_file(tmp_path / "s.jsonl")
    assert list(back) == list(qs) and back[0].metadata == qs[0].metadata


def test_file_sets_instruction_and_answer_format_per_row_or_per_file(tmp_path):
    rows = [{"prompt": "Name the primary colours.", "answer": "red, yellow, blue", "answer_format": "list",
             "instruction": "List them, separated by commas."},
            {"prompt": "Capital of France?", "answer": "Paris"},
            {"prompt": "What is 2 + 2?", "answer": 4, "metadata": {"answer_format": "number"}}]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    plain = SimpleNamespace(chat_template=None)
    qs = load_file(path)
    assert render_prompt(qs[0], plain) == "Name the primary colours. List them, separated by commas.\nAnswer:"
    assert render_prompt(qs[1], plain) == "Capital of France? Give only the final answer.\nAnswer:"  # guessed: text
    assert qs[2].metadata["answer_format"] == "number" and "instruction" not in qs[1].metadata
    # a file-wide setting fills the rows that leave it unset; a row's own value wins
    qs = load_file(path, answer_format="text", instruction="One word.")
    assert [q.metadata["answer_format"] for q in qs] == ["list", "text", "number"]
    assert [q.metadata["instruction"] for q in qs] == ["List them, separated by commas.", "One word.", "One word."]
    # CSV leaves empty cells for unset values
    pd.DataFrame([{"question": "Capital of Italy?", "answer": "Rome", "answer_format": "", "instruction": ""},
                  {"question": "Primes below 6?", "answer": "2, 3, 5", "answer_format": "list", "instruction": ""}]
                 ).to_csv(tmp_path / "f.csv", index=False)
    qs = load_file(tmp_path / "f.csv", answer_format="text")
    assert [q.metadata["answer_format"] for q in qs] == ["text", "list"]
    assert all("instruction" not in q.metadata for q in qs)
    save_jsonl(qs, tmp_path / "back.jsonl")
    assert [q.metadata["answer_format"] for q in load_file(tmp_path / "back.jsonl")] == ["text", "list"]


def test_file_answer_format_and_instruction_errors_name_the_row(tmp_path):
    rows = [{"prompt": "a?", "answer": "a"}, {"prompt": "b?", "answer": "b", "answer_format": "words"}]
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: field 'answer_format' must be one of number, text, "
                                        r"list, math, scratchpad, got 'words'"):
        load_file(write_jsonl(tmp_path / "bad.jsonl", rows))
    rows = [{"prompt": "a?", "answer": "a", "instruction": 3}]
    with pytest.raises(DataError, match=r"line 1: field 'instruction' must be a string, got int"):
        load_file(write_jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(DataError, match=r"ok\.jsonl: answer_format must be one of .*, got 'float'"):
        load_file(write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "a?", "answer": "a"}]), answer_format="float")


def test_load_hf_json_builder_and_disk(tmp_path):
    path = write_jsonl(tmp_path / "h.jsonl", ROWS)
    check_rows(load_hf("json", data_files=str(path), cache_dir=str(tmp_path / "cache")))
    import datasets
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    check_rows(load_hf(str(tmp_path / "saved")))
    with pytest.raises(DataError, match="cannot load dataset"):
        load_hf("json", data_files=str(tmp_path / "nope.jsonl"), cache_dir=str(tmp_path / "cache"))


def test_load_task_arithmetic():
    train, held = load_task(cfg("arithmetic", train_size=30, eval_size=10))
    assert len(train) == 30 and len(held) == 10 and not set(train.ids) & set(held.ids)
    assert not set(train.prompts) & set(held.prompts)


def test_arithmetic_mix_is_deterministic_distinct_and_stratified():
    qs = arithmetic_mix_questions(200, seed=0)
    assert [q.prompt for q in qs] == [q.prompt for q in arithmetic_mix_questions(200, seed=0)]
    assert [q.prompt for q in qs] != [q.prompt for q in arithmetic_mix_questions(200, seed=1)]
    assert len({q.prompt for q in qs}) == 200 and len({q.id for q in qs}) == 200
    counts = {s.name: sum(q.metadata["stratum"] == s.name for q in qs) for s in ARITHMETIC_MIX}
    assert counts == {s.name: round(s.share * 200) for s in ARITHMETIC_MIX}
    assert abs(sum(s.share for s in ARITHMETIC_MIX) - 1) < 1e-9
    assert [q.metadata["level"] for q in qs if q.metadata["stratum"] == "3terms"][:1] == [4]
    echo = next(q for q in qs if q.metadata["stratum"] == "echo")
    assert echo.answer == echo.prompt[len("What is "):-1]


def test_load_task_arithmetic_mix_is_the_default():
    from dotslab.config import Config
    assert Config().task == "arithmetic_mix"
    train, held = load_task(cfg("arithmetic_mix", train_size=60, eval_size=20))
    assert len(train) == 60 and len(held) == 20 and not set(train.prompts) & set(held.prompts)
    assert {q.metadata["stratum"] for q in train} == {s.name for s in ARITHMETIC_MIX}


def test_load_task_file_and_hf(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", ROWS)
    train, held = load_task(cfg(str(path)))
    assert len(train) == 4 and len(held) == 2 and not set(train.ids) & set(held.ids)
    import datasets
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    train, held = load_task(cfg(f"hf:{tmp_path / 'dd'}:test", eval_size=1))
    assert len(train) == 5 and len(held) == 1
    assert train[0].metadata["answer_format"] == "math"  # free-form math answers: ask for \boxed{}
    assert render_prompt(train[0], SimpleNamespace(chat_template=None)).endswith(
        " Reason step by step, and put your final answer within \\boxed{}.\nAnswer:")
    with pytest.raises(DataError, match="keep at least 1"):
        load_task(cfg(str(path), eval_size=6))
    with pytest.raises(DataError, match="unknown task"):
        load_task(cfg("gsm8k"))


def test_load_task_reasoning_gym():
    pytest.importorskip("reasoning_gym")
    train, held = load_task(cfg("reasoning_gym:chain_sum,products", train_size=9, eval_size=3))
    assert len(train) == 9 and len(held) == 3 and not set(train.ids) & set(held.ids)
    assert {q.metadata["task"] for q in list(train) + list(held)} == {"chain_sum", "products"}
    q = train[0]
    assert q.metadata["rg_entry"]["answer"] == q.answer and q.id.startswith("rg-")
    qs = reasoning_gym_questions("chain_sum", 40, 0, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    assert len(set(qs.prompts)) == 40
    with pytest.raises(DataError, match="cannot create generator 'nope'"):
        reasoning_gym_questions("nope", 2, 0)


# ---- prompt rendering --------------------------------------------------------------------
def tiny_tokenizer(chat_template):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "what": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tok.chat_template = chat_template
    return tok


def test_render_prompt_with_and_without_chat_template():
    q = Question("a", "What is 1 + 2?", "3")
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    instruction = "Give only the final answer as a number."
    assert INSTRUCTIONS["number"] == instruction
    assert render_prompt(q, tiny_tokenizer(template)) == f"<|user|>What is 1 + 2? {instruction}\n<|assistant|>"
    assert render_prompt(q, tiny_tokenizer(None)) == f"What is 1 + 2? {instruction}\nAnswer:"


# ---- fuzz: any JSONL loads or raises DataError -------------------------------------------
_keys = st.one_of(st.sampled_from(["id", "prompt", "question", "answer", "output", "metadata"]), st.text(max_size=5))
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
                     max_leaves=8)
_row = st.dictionaries(_keys, _json, max_size=5)
_plausible = st.fixed_dictionaries(  # near-valid rows, so some files load and the converter is exercised too
    {"prompt": st.text(max_size=8), "answer": st.one_of(st.text(max_size=4), st.integers(), st.floats())},
    optional={"id": st.one_of(st.integers(0, 3), st.text(max_size=2), st.floats(), st.none()), "extra": _json})
_garbage = st.one_of(_row.map(lambda r: json.dumps(r).encode()), _json.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=12), st.just(b"[" * 5000))
_plausible_line = _plausible.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass"))
_file = st.one_of(st.lists(_plausible_line, min_size=1, max_size=6),
                  st.lists(st.one_of(_plausible_line, _garbage), max_size=6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_file)
def test_fuzz_load_file_only_raises_data_error(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        qs = load_file(path)
    except DataError:
        return
    assert len(qs) >= 1 and all(q.prompt.strip() and q.answer.strip() for q in qs)


def test_shipped_sample_file_loads():
    from pathlib import Path
    qs = load_file(Path(__file__).resolve().parent.parent / "data" / "arithmetic_sample.jsonl")
    assert len(qs) == 64 and qs[0].metadata["task"] == "arithmetic"
