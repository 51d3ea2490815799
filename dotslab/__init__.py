"""dotslab: a workbench for DOTS (difficulty-targeted online data selection) + rollout replay on GRPO.

Sun et al., "Improving Data Efficiency for LLM Reinforcement Fine-tuning Through Difficulty-targeted
Online Data Selection and Rollout Replay", NeurIPS 2025, arXiv 2506.05316.
"""
from .config import Config, ConfigError, GRPOConfig, PredictorConfig, ReplayConfig, SelectionConfig, PRESETS

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "GRPOConfig", "PredictorConfig", "ReplayConfig", "SelectionConfig",
           "PRESETS", "train"]


def train(cfg, **kwargs):
    """Lazy alias of :func:`dotslab.trainer.train` (keeps ``import dotslab`` light)."""
    from .trainer import train as _train
    return _train(cfg, **kwargs)
