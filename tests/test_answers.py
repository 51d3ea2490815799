"""Answer formats and prompt text: instructions per source, answer extraction, per-question 'auto'.

Run: .venv/bin/python -m pytest tests/test_answers.py -q
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from dotslab.data import arithmetic_questions, load_task, reasoning_gym_questions, render_prompt
from dotslab.models import tiny_tokenizer


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
