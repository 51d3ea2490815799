"""Policy loading: local HF folders (the hub code path, offline), pad-less tokenizers, offline SmolLM2.

Run: .venv/bin/python -m pytest tests/test_models.py
"""
import torch

from dotslab.models import load_policy, smollm2_path, tiny_policy, tiny_tokenizer
from dotslab.records import Question
from dotslab.data import render_prompt


def test_local_folder_loads_through_the_hf_path_and_gets_a_pad_token(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_policy(tok, seed=3)
    tok.pad_token = None  # like GPT-2/Llama tokenizers that ship without one
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, t2 = load_policy(str(tmp_path))
    assert t2.pad_token == t2.eos_token and t2.padding_side == "left"
    for (n, p), (_, q) in zip(model.named_parameters(), m2.named_parameters()):
        assert torch.equal(p, q), n


def test_tiny_policy_generates_with_left_padding():
    model, tok = load_policy("tiny")
    prompts = [render_prompt(Question("a", "What is 1 + 2?", "3"), tok), "x"]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc.attention_mask[1, 0] == 0  # left padded
    out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == enc.input_ids.shape[1] + 3


def test_offline_smollm2_converts_once_and_answers():
    path = smollm2_path()  # converts the GGUF on first use (about 20 s), then reuses the cache
    assert (path / "model.safetensors").exists()
    assert smollm2_path() == path
    model, tok = load_policy("smollm2")
    assert model.config.vocab_size == 49152 and not hasattr(model.config, "quantization_config")
    enc = tok([render_prompt(Question("a", "What is 2 + 3?", "5"), tok)], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip()
