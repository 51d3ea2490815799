"""Where dotslab keeps what it builds once: the fp32 SmolLM2 folder, the miniature policy, embeddings.

Not from the paper. ``$DOTSLAB_CACHE`` when set, else ``~/.cache/dotslab``.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("DOTSLAB_CACHE", Path.home() / ".cache" / "dotslab"))
