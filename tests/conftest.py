import copy

import pytest
import torch

from pruned_perf.models import build_model
from trained_model import load_trained


@pytest.fixture(scope="session")
def trained_model(request):
    """A tiny LLaMA trained on the built-in text (cached across sessions in pytest's cache dir)."""
    return load_trained(request.config.cache.mkdir("pruned_perf_trained"))


@pytest.fixture
def trained(trained_model):
    """A private copy: pruning edits the model in place."""
    return copy.deepcopy(trained_model)


@pytest.fixture(params=["tiny-llama", "tiny-gqa"])
def tiny(request):
    """A fresh random-weight tiny preset (float32, CPU), multi-head and grouped-query."""
    return request.param, build_model(request.param)


@pytest.fixture(scope="module")
def one_thread():
    """Timing-sensitive modules run torch on one thread: two OpenMP threads on two shared cores stall
    a call up to 10x whenever another process runs. What they check does not depend on threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
