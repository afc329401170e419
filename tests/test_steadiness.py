"""The steadiness probe: a fixed workload timed on the machine, with the machine's threads."""
import torch

from pruned_perf.bench import steadiness
from pruned_perf.bench.fingerprint import cpu_cores


def test_probe_times_the_workload_and_restores_the_thread_setting(monkeypatch):
    seen = []
    real_run = steadiness._run

    def spy(x, w, device):
        seen.append(torch.get_num_threads())
        return real_run(x, w, device)

    monkeypatch.setattr(steadiness, "_run", spy)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the timed code's setting, e.g. OMP_NUM_THREADS=1
    try:
        times = steadiness.probe("cpu", samples=3)
        assert torch.get_num_threads() == 1  # given back to the timed code as it was
    finally:
        torch.set_num_threads(previous)
    assert len(times) == 3 and all(t > 0 for t in times)
    # one untimed first call, then the samples: all with every core the process may use
    assert seen == [cpu_cores()] * 4
