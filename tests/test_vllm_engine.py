"""The vLLM rollout engine against a fake ``LLM`` (output conversion, verbs, weight sync); real vLLM on a GPU.

Run: .venv/bin/python -m pytest tests/test_vllm_engine.py
"""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from dotslab.data import arithmetic_questions, render_prompt
from dotslab.models import load_policy, tiny_policy, tiny_tokenizer
from dotslab.rewards import SafeReward
from dotslab.rollout import HFGenerateEngine, rollout_groups
from dotslab.vllm_engine import VLLMEngine, cut_after_eos


class FakeParams:
    def __init__(self, **kw):
        self.kw = kw


class FakeLLM:
    """Answers ``generate`` with scripted token ids: ``script(prompt_ids, k) -> (token_ids, finish, stop_reason)``."""

    def __init__(self, script):
        self.script, self.calls, self.prefix_resets = script, [], 0

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        out = []
        for p in prompts:
            outs = [SimpleNamespace(index=k, token_ids=t, finish_reason=f, stop_reason=s)
                    for k in range(params.kw["n"]) for t, f, s in [self.script(p["prompt_token_ids"], k)]]
            out.append(SimpleNamespace(outputs=outs[::-1]))  # vLLM order is not promised: the engine sorts by index
        return out

    def reset_prefix_cache(self):
        self.prefix_resets += 1


def engine_with(script, tok=None, **kw):
    tok = tok or tiny_tokenizer()
    llm = FakeLLM(script)
    engine = VLLMEngine(llm, tok, max_new_tokens=6, temperature=0.7, top_p=0.9, sampling_params_cls=FakeParams, **kw)
    return engine, llm


def test_import_is_lazy():
    code = "import sys, dotslab.vllm_engine; assert 'vllm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_policy_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    model, tok = load_policy("tiny")
    with pytest.raises(ImportError, match=r"dotslab\[gpu\]"):
        VLLMEngine.from_policy(model, tok, max_new_tokens=4, temperature=1.0)


@pytest.mark.parametrize("ids, on_eos, want", [
    ([5, 6, 1, 7], False, [5, 6, 1]),      # EOS mid-way: cut after it, keep it
    ([5, 6], True, [5, 6, 1]),             # stopped on EOS but the token was left out: put it back
    ([5, 6], False, [5, 6]),               # hit max_tokens: keep as is
    ([], True, [1]),
])
def test_cut_after_eos(ids, on_eos, want):
    assert cut_after_eos(ids, 1, stopped_on_eos=on_eos) == want


def test_sample_converts_vllm_outputs():
    tok = tiny_tokenizer()
    eos = tok.eos_token_id
    a, b = tok.convert_tokens_to_ids(["4", "2"])
    script = {0: ([a, eos, b], "stop", None),      # EOS then junk
              1: ([a, b], "stop", None),           # EOS excluded by the sampler
              2: ([a, b, a], "length", None),      # truncated
              3: ([a], "stop", "\n")}              # a stop string, not EOS
    engine, llm = engine_with(lambda p, k: script[k])
    prompts = ["<user>What is 2+2?<assistant>", "<user>1+1<assistant>"]
    out = engine.sample(prompts, 4)
    (sent, params), = llm.calls
    assert params.kw == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 6, "stop_token_ids": [eos]}
    for p, req, samples in zip(prompts, sent, out):
        ids = tok(p, add_special_tokens=False)["input_ids"]
        assert req == {"prompt_token_ids": ids} and len(samples) == 4
        assert all(s.prompt_ids.tolist() == ids for s in samples)
    got = [s.completion_ids.tolist() for s in out[0]]
    assert got == [[a, eos], [a, b, eos], [a, b, a], [a]]
    assert [s.text for s in out[0]] == ["4", "42", "424", "4"]
    assert engine.sample([], 4) == []


def test_same_samples_as_the_hf_engine_for_the_same_tokens():
    model, tok = load_policy("tiny", seed=2)
    prompts = [render_prompt(q, tok) for q in arithmetic_questions(3, seed=2)]
    torch.manual_seed(0)
    hf = HFGenerateEngine(model, tok, max_new_tokens=6, temperature=1.0).sample(prompts, 2)
    by_prompt = {tuple(g[0].prompt_ids.tolist()): g for g in hf}

    def replay_hf(prompt_ids, k):  # what vLLM would return for those tokens: EOS dropped, finish 'stop'
        ids = by_prompt[tuple(prompt_ids)][k].completion_ids.tolist()
        ended = ids[-1:] == [tok.eos_token_id]
        return (ids[:-1] if ended else ids), ("stop" if ended else "length"), None

    engine, _ = engine_with(replay_hf, tok)
    for h, v in zip(hf, engine.sample(prompts, 2)):
        for x, y in zip(h, v):
            assert torch.equal(x.prompt_ids, y.prompt_ids) and torch.equal(x.completion_ids, y.completion_ids)
            assert x.text == y.text


def test_plugs_into_rollout_groups():
    model, tok = load_policy("tiny")
    a = tok.convert_tokens_to_ids("7")
    engine, _ = engine_with(lambda p, k: ([a] * (k + 1), "length", None), tok)
    groups = rollout_groups(engine, model, tok, list(arithmetic_questions(2, seed=0)), 3,
                            SafeReward(lambda c, q: float(c == "7")), step=1, temperature=0.7)
    assert [len(g.rollouts) for g in groups] == [3, 3]
    for g in groups:
        assert [r.reward for r in g.rollouts] == [1.0, 0.0, 0.0]
        assert all(r.behaviour_logprobs.shape == r.completion_ids.shape for r in g.rollouts)


class _VLLMModel:
    def __init__(self):
        self.loaded = []

    def load_weights(self, weights):
        self.loaded.extend(weights)


def test_sync_weights_pushes_every_parameter():
    model, tok = load_policy("tiny")
    engine, llm = engine_with(lambda p, k: ([], "length", None), tok, policy=model)
    target = _VLLMModel()
    llm.apply_model = lambda fn: fn(target)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    engine.sync_weights()
    names = [n for n, _ in model.named_parameters()]
    assert [n for n, _ in target.loaded] == names and engine.weight_sync == "apply_model"
    assert all(torch.equal(w, p) for (_, w), p in zip(target.loaded, model.parameters()))
    assert llm.prefix_resets == 1


def test_sync_weights_falls_back_to_the_worker_then_to_a_reload(tmp_path):
    model, tok = load_policy("tiny")
    engine, llm = engine_with(lambda p, k: ([], "length", None), tok, policy=model)
    target = _VLLMModel()
    llm.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
        driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=target))))
    engine.sync_weights()
    assert engine.weight_sync == "load_weights" and len(target.loaded) == len(list(model.parameters()))

    engine, llm = engine_with(lambda p, k: ([], "length", None), tok, policy=model, model_dir=str(tmp_path))
    rpcs = []
    llm.collective_rpc = rpcs.append
    engine.sync_weights()
    assert engine.weight_sync == "reload" and rpcs == ["reload_weights"]
    assert (tmp_path / "config.json").exists()

    engine, _ = engine_with(lambda p, k: ([], "length", None), tok, policy=model)
    with pytest.raises(RuntimeError, match="apply_model.*load_weights.*reload"):
        engine.sync_weights()


@pytest.mark.gpu
def test_real_vllm_samples_and_syncs(tmp_path):
    pytest.importorskip("vllm")
    tok = tiny_tokenizer()
    model = tiny_policy(tok, seed=0, hidden_size=256)  # head_dim 64: every vLLM attention backend takes it
    engine = VLLMEngine.from_policy(model, tok, max_new_tokens=8, temperature=1.0, model_dir=str(tmp_path),
                                    gpu_memory_utilization=0.2, enforce_eager=True)
    prompts = ["<user>What is 2+2?<assistant>", "<user>1+1<assistant>"]
    out = engine.sample(prompts, 3)
    assert [len(s) for s in out] == [3, 3]
    for s in (s for group in out for s in group):
        ids = s.completion_ids.tolist()
        assert 1 <= len(ids) <= 9 and tok.eos_token_id not in ids[:-1]
    greedy = VLLMEngine(engine.llm, tok, max_new_tokens=8, temperature=0.0, policy=model, model_dir=str(tmp_path))
    before = [s.completion_ids.tolist() for s in greedy.sample(prompts, 1)[0]]
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(-1.0)  # flips the argmax: greedy output must change
    greedy.sync_weights()
    assert [s.completion_ids.tolist() for s in greedy.sample(prompts, 1)[0]] != before
