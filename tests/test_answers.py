"""Answer formats and prompt text: instructions per source, answer extraction, per-question 'auto'.

Run: .venv/bin/python -m pytest tests/test_answers.py -q
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from dotslab.data import arithmetic_questions, reasoning_gym_questions, render_prompt, save_jsonl
from dotslab.readers import load_file
from dotslab.tasks import load_task
from dotslab.models import tiny_tokenizer
from dotslab.rewards import get_reward_fn


def _hub_question(tmp_path):
    """A question as an ``hf:`` task yields it (free-form math: the notebook trainer asks for \\boxed{})."""
    datasets = pytest.importorskip("datasets")
    rows = [{"id": i, "problem": f"Simplify {i}/{2 * i}.", "answer": "\\frac{1}{2}"} for i in range(1, 4)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    train, _ = load_task(SimpleNamespace(task=f"hf:{tmp_path / 'dd'}:test", train_size=2, eval_size=1, seed=0))
    return train[0]


# ---- one home for the prompt text ------------------------------------------------------------
@pytest.mark.parametrize("has_template", [True, False])
def test_trl_rows_carry_the_notebook_trainer_prompt_text(tmp_path, has_template):
    pytest.importorskip("trl")
    pytest.importorskip("reasoning_gym")
    from dotslab.integrations.trl import question_rows
    tok = tiny_tokenizer()
    if not has_template:
        tok.chat_template = None
    questions = [_hub_question(tmp_path), reasoning_gym_questions("spell_backward", 1, 0)[0],
                 arithmetic_questions(1, 0)[0]]
    for q, row in zip(questions, question_rows(questions, tok)):
        rendered = render_prompt(q, tok)  # what dotslab's own trainer feeds the policy
        if has_template:
            (message,) = row["prompt"]
            assert message["role"] == "user"
            assert rendered == f"<user>{message['content']}<assistant>"  # tiny_tokenizer's template
            assert tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) == rendered
        else:
            assert row["prompt"] == rendered
        assert q.prompt in rendered
    assert "boxed" in render_prompt(questions[0], tok)


def test_instruction_joins_the_prompt_once():
    from dotslab.data import user_message
    from dotslab.records import Question
    assert user_message(Question("a", "What is 1 + 2?", "3")) == "What is 1 + 2? Give only the final answer as a number."
    assert user_message(Question("b", "Spell: sun", "nus")) == "Spell: sun\nGive only the final answer."
    assert user_message(Question("c", "Sort these:\n", "a, b", {"answer_format": "list"})) == \
        "Sort these:\nGive only the final answer, as a comma-separated list."
    # files written before answer formats carry the instruction with its own leading space
    old = Question("d", "Find x.", "2", {"instruction": " Reason step by step."})
    assert user_message(old) == "Find x. Reason step by step."


# ---- reasoning-gym: each generator asks for and reads its own kind of answer -----------------
TEXT_GENERATORS = ["spell_backward", "number_sorting", "letter_jumble", "word_sorting", "sentence_reordering",
                   "caesar_cipher"]
NUMBER_GENERATORS = ["chain_sum", "gsm_symbolic", "basic_arithmetic"]


def _said(gold: str) -> str:
    """'The answer is X.' as a model would end the sentence (no second full stop)."""
    return f"The answer is {gold}" + ("" if gold[-1:] in ".!?" else ".")


def _instruction_part(question) -> str:
    return render_prompt(question, SimpleNamespace(chat_template=None))[len(question.prompt):]


@pytest.mark.parametrize("name", TEXT_GENERATORS + NUMBER_GENERATORS)
def test_reasoning_gym_answer_wrapped_as_asked_scores_1_and_a_wrong_one_0(name):
    pytest.importorskip("reasoning_gym")
    questions = reasoning_gym_questions(name, 4, 7)
    auto = get_reward_fn("auto", f"reasoning_gym:{name}")
    numeric = name in NUMBER_GENERATORS
    for k, q in enumerate(questions):
        gold = q.answer
        asked = _instruction_part(q)
        assert ("number" in asked) == numeric, asked  # a word, list or sentence is not asked for as a number
        wrong = str(Decimal(gold) + 1) if numeric else next(o.answer for o in questions if o.answer != gold)
        for wrap in (lambda a: a,                                   # "Give only the final answer."
                     lambda a: f"Let me work it out.\n{_said(a)}",  # "The answer is X."
                     lambda a: f"Answer: {a}",
                     lambda a: f"So the result is \\boxed{{{a}}}",
                     lambda a: f"<answer>{a}</answer>"):             # reasoning-gym's own answer tags
            assert auto(wrap(gold), q) == 1.0, (wrap(gold), gold)
            assert auto(wrap(wrong), q) == 0.0, (wrap(wrong), gold)


def test_the_answer_is_on_a_non_numeric_task_scores_1():
    pytest.importorskip("reasoning_gym")
    q = reasoning_gym_questions("spell_backward", 1, 0)[0]
    auto = get_reward_fn("auto", "reasoning_gym:spell_backward")
    assert auto(f"The word is {q.metadata['word']}. Backward: The answer is {q.answer}.", q) == 1.0
    assert auto(f"The answer is **{q.answer}**", q) == 1.0
    assert auto(f"The answer is {q.answer[:-1]}.", q) == 0.0  # partial credit binarizes to 0


# ---- auto decides per question, not from the task name ---------------------------------------
def test_auto_scores_arithmetic_kept_in_a_file_by_exact_match(tmp_path):
    path = tmp_path / "arith.jsonl"
    save_jsonl(arithmetic_questions(20, 3), path)
    shipped = Path(__file__).resolve().parent.parent / "data" / "arithmetic_sample.jsonl"  # written before formats
    for task in (str(path), str(shipped)):
        auto = get_reward_fn("auto", task)
        echoes = 0
        for q in load_file(task):
            expression = q.metadata["expression"]
            if expression.split()[-1] != q.answer:  # not '0 + 7', whose last number is the answer
                assert auto(expression, q) == 0.0, expression  # math-verify evaluates the echo to the answer
                echoes += 1
            assert auto(f"{expression} = {q.answer}", q) == 1.0
            assert auto(f"The answer is {int(q.answer) + 1}.", q) == 0.0
        assert echoes >= 15


# ---- extraction ------------------------------------------------------------------------------
@pytest.mark.parametrize("completion, gold, expected", [
    ("noremopyh", "noremopyh", "noremopyh"),                                     # a final line
    ("Reversing it letter by letter.\nnoremopyh", "noremopyh", "noremopyh"),
    ("Let me think.\nThe answer is noremopyh.", "noremopyh", "noremopyh"),
    ("The final answer is: noremopyh\nHope this helps!", "noremopyh", "noremopyh"),
    ("The answer is:\nnoremopyh\nHope this helps!", "noremopyh", "noremopyh"),  # answer on the next line
    ("Answer: noremopyh", "noremopyh", "noremopyh"),
    ("**Answer:** noremopyh", "noremopyh", "noremopyh"),
    ("The answer is **noremopyh**.", "noremopyh", "noremopyh"),
    ('The answer is "noremopyh".', "noremopyh", "noremopyh"),
    ("So \\boxed{noremopyh} it is.\nDone", "noremopyh", "noremopyh"),
    ("<answer>noremopyh</answer>\nThe answer is x", "noremopyh", "noremopyh"),  # reasoning-gym's tag first
    ("The answer is The cat sat.", "The cat sat.", "The cat sat."),               # the gold's own full stop stays
    ("The answer is ['1', '2'].", "['1', '2']", "['1', '2']"),
    ("Answer:\n1 2\n3 4", "1 2\n3 4", "1 2\n3 4"),                                 # a grid spans lines
    ("I will answer this quickly.\nnus", "nus", "nus"),                           # 'answer' alone is no marker
    ("", "nus", None),
])
def test_answer_span(completion, gold, expected):
    from dotslab.answers import answer_span
    assert answer_span(completion, gold) == expected


@pytest.mark.parametrize("answer, fmt", [("149", "number"), ("-4", "number"), ("3/4", "number"), ("0.5", "number"),
                                         ("1,234", "number"), ("1,2,3", "text"), ("1e5", "text"),
                                         ("\\frac{1}{2}", "math"), ("x^2+1", "math"), ("Paris", "text"),
                                         ("KIND, Nathaniel", "text")])
def test_guess_format(answer, fmt):
    from dotslab.answers import guess_format
    assert guess_format(answer) == fmt


def test_text_and_list_verifiers():
    from dotslab.records import Question
    from dotslab.rewards import list_match, text_match
    city = Question("c", "Capital of France?", "Paris", {"answer_format": "text"})
    assert text_match("The answer is  PARIS.", city) == 1.0
    assert text_match("The answer is Paris, France.", city) == 0.0
    assert text_match("Paris is big.\nLyon", city) == 0.0  # the last line is the answer
    primes = Question("p", "First three primes?", "2, 3, 5", {"answer_format": "list"})
    for said in ("2, 3, 5", "The answer is [2, 3, 5].", "Answer: ['2', '3', '5']", "\\boxed{(2, 3.0, 5)}"):
        assert list_match(said, primes) == 1.0, said
    for said in ("2, 5, 3", "2, 3", "2, 3, 5, 7", "The answer is 235."):
        assert list_match(said, primes) == 0.0, said
    auto = get_reward_fn("auto")
    assert auto("The answer is [2, 3, 5].", primes) == 1.0 and auto("3, 2, 5", primes) == 0.0


def test_explain_shows_what_each_verifier_read():
    pytest.importorskip("reasoning_gym")
    pytest.importorskip("math_verify")
    from dotslab.records import Question
    from dotslab.rewards import explain
    spell = reasoning_gym_questions("spell_backward", 1, 0)[0]
    shown = explain(f"Backward:\nThe answer is {spell.answer}.", spell)
    assert shown == {"extracted": spell.answer, "reward": 1.0, "is_correct": True, "verifier": "reasoning_gym",
                     "answer_format": "text", "error": None}
    arithmetic = arithmetic_questions(1, 0)[0]
    echo = arithmetic.metadata["expression"]
    assert explain(echo, arithmetic)["verifier"] == "exact"
    assert explain(echo, arithmetic)["extracted"] == echo.split()[-1]
    assert explain(echo, arithmetic, "math_verify")["extracted"] == echo  # what math-verify read (and evaluated)
    hub = Question("h", "Expand.", "2x+3", {"answer_format": "math"})
    assert explain("so $3 + 2x$", hub)["extracted"] == "3 + 2x" and explain("so $3 + 2x$", hub)["is_correct"]
    broken = explain("x", Question("b", "?", "y"), "reasoning_gym")  # not a reasoning-gym question
    assert broken["reward"] == 0.0 and not broken["is_correct"] and "rg_entry" in broken["error"]
    with pytest.raises(ValueError, match="unknown reward"):
        explain("x", hub, "fuzzy")
