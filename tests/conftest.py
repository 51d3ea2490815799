"""Shared fixtures. Run everything: .venv/bin/python -m pytest"""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models gain nothing from intra-op threads, and a busy machine makes two threads ~10x slower
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: pass --runslow to run"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An isolated DOTSLAB_CACHE (embedding cache etc.)."""
    monkeypatch.setenv("DOTSLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
