import pytest
import torch

from pruned_perf.llama.models import build_model


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
