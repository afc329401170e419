import copy

import pytest

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
