"""The miniature world: its task family, its reward, a short pretraining build, and loading it as a policy.

Run: .venv/bin/python -m pytest tests/test_mini.py
"""
import math
import random

import pytest
import torch

from dotslab import mini
from dotslab.config import Config, ConfigError
from dotslab.data import (DataError, addition_digits, addition_questions, is_rl_question, max_new_tokens_for,
                          render_prompt, worked_answer)
from dotslab.models import load_policy
from dotslab.rewards import auto_reward, explain
from dotslab.tasks import load_task

SMALL = mini.MiniSpec(layers=1, hidden_size=16, heads=2, intermediate_size=32, steps=3, batch_size=4,
                      warmup_steps=1)


def column_addition(a: int, b: int) -> str:
    """The worked answer computed independently: schoolbook addition on digit lists, most significant first."""
    xs, ys = [int(c) for c in str(a)], [int(c) for c in str(b)]
    width = max(len(xs), len(ys))
    xs, ys = [0] * (width - len(xs)) + xs, [0] * (width - len(ys)) + ys
    steps, carry = [], 0
    for x, y in zip(reversed(xs), reversed(ys)):
        digit, carry = (x + y + carry) % 10, (x + y + carry) // 10
        steps.append(f"{digit}{carry}")
    return ",".join(steps) + ">" + str(a + b)


def test_worked_answer_by_hand_and_against_column_addition():
    assert worked_answer(445, 908) == "31,50,31>1353"  # 5+8=13: 3 carry 1; 4+0+1=5: 5 carry 0; 4+9=13
    assert worked_answer(5, 7) == "21>12"
    assert worked_answer(99, 1) == "01,01>100"
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.randint(0, 10**6), rng.randint(0, 10**6)
        assert worked_answer(a, b) == column_addition(a, b)


def test_addition_questions_are_rl_part_distinct_and_balanced():
    qs = addition_questions(40, seed=3, digits=(2, 3, 4, 5))
    assert len(qs) == 40 and len(set(q.prompt for q in qs)) == 40
    assert all(is_rl_question(q.prompt) for q in qs)
    assert sorted(q.metadata["digits"] for q in qs) == [2] * 10 + [3] * 10 + [4] * 10 + [5] * 10
    for q in qs:
        a, b = map(int, q.prompt[:-1].split("+"))
        assert len(str(a)) == len(str(b)) == q.metadata["digits"] and q.answer == str(a + b)
    assert [q.prompt for q in addition_questions(40, 3, (2, 3, 4, 5))] == [q.prompt for q in qs]
    with pytest.raises(DataError, match="only about"):
        addition_questions(40, 0, digits=(1,))


def test_pretraining_never_sees_rl_questions():
    tok = mini.mini_tokenizer()
    ids, labels = mini._pretraining_batch(random.Random(1), mini.MiniSpec(batch_size=256), tok)
    texts = [tok.decode(row, skip_special_tokens=True) for row in ids]
    prompts = [t.split("=")[0] + "=" for t in texts]
    assert not any(is_rl_question(p) for p in prompts)
    row = ids[0][labels[0] != -100]  # the loss covers exactly the worked answer and EOS
    a, b = map(int, prompts[0][:-1].split("+"))
    assert tok.decode(row[:-1]) == worked_answer(a, b) and int(row[-1]) == tok.eos_token_id


def test_task_names_and_digit_ranges():
    assert addition_digits("addition") == (2, 3, 4, 5, 6)
    assert addition_digits("addition:3-5") == (3, 4, 5) and addition_digits("addition:4") == (4,)
    for bad in ("addition:x", "addition:5-3", "addition:0-2"):
        with pytest.raises(DataError):
            addition_digits(bad)
    train, held_out = load_task(Config(task="addition:2-3", train_size=30, eval_size=10))
    assert len(train) == 30 and len(held_out) == 10 and not set(train.ids) & set(held_out.ids)
    assert max_new_tokens_for(6) >= len(worked_answer(999999, 999999)) + 1  # room for EOS


def test_scratchpad_reward_reads_after_the_last_marker():
    q = addition_questions(1, 0, digits=(3,))[0]
    a, b = map(int, q.prompt[:-1].split("+"))
    good = worked_answer(a, b)
    assert auto_reward(good, q) == 1.0
    assert auto_reward(good + "1", q) == 0.0            # an extra digit is a different number
    assert auto_reward(good.split(">")[0], q) == 0.0    # no final answer
    assert auto_reward(">" + q.answer, q) == 1.0        # the final answer is what is checked
    assert explain(good, q)["extracted"] == q.answer


def test_short_build_loads_as_a_policy_and_samples(tmp_path, monkeypatch):
    folder = mini.mini_path(tmp_path, SMALL, verbose=False)
    assert (folder / "mini.json").exists() and folder.name == f"mini-{SMALL.short_hash()}"
    monkeypatch.setenv("DOTSLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(mini, "DEFAULT_SPEC", SMALL)
    model, tok = load_policy("mini")
    assert sum(p.numel() for p in model.parameters()) < 50_000 and tok.padding_side == "left"
    q = addition_questions(1, 0, digits=(2,))[0]
    prompt = render_prompt(q, tok)
    assert prompt == "<bos>" + q.prompt  # no instruction, no roles
    assert tok(prompt, add_special_tokens=False).input_ids[0] == tok.bos_token_id
    # a second call reuses the folder (same weights)
    again, _ = load_policy("mini")
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), again.state_dict().values()))


def test_pretraining_is_deterministic_and_learns():
    torch.set_num_threads(1)
    spec = mini.MiniSpec(layers=1, hidden_size=32, heads=2, intermediate_size=64, steps=60, batch_size=16,
                         warmup_steps=5, learning_rate=5e-3)
    losses = []
    m1, _ = mini.pretrain(spec, progress=lambda s, loss: losses.append(loss))
    m2, _ = mini.pretrain(spec)
    assert all(torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert len(losses) == 2  # reported at step 50 and at the end
    assert losses[-1] < 0.7 * math.log(17)  # well under a uniform guess over the 17 tokens


def test_pass_rate_standard_error_against_repeated_sampling():
    import numpy as np
    from dotslab.rollout import pass_rate_standard_error
    # by hand: rows with 1/4, 2/4, 4/4 correct: sum p(1-p) = .1875 + .25 + 0 = .4375; /(k-1) = .14583; sqrt/3
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    assert math.isclose(pass_rate_standard_error(correct), math.sqrt(0.4375 / 3) / 3, rel_tol=1e-12)
    one = np.array([[1], [0], [1]], dtype=bool)          # k = 1: binomial over the 3 completions, p = 2/3
    assert math.isclose(pass_rate_standard_error(one), math.sqrt(2 / 3 * 1 / 3 / 3), rel_tol=1e-12)
    # independently: the spread of the mean over many simulated evaluations of a fixed question set
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=60)                     # true pass rates of 60 held-out questions
    k = 4
    means = [(rng.uniform(size=(60, k)) < p[:, None]).mean() for _ in range(4000)]
    estimates = [pass_rate_standard_error(rng.uniform(size=(60, k)) < p[:, None]) for _ in range(200)]
    assert math.isclose(np.mean(estimates), np.std(means), rel_tol=0.05)
