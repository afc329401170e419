"""The steadiness probe: a fixed workload timed on the machine, with the machine's threads."""
import os

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


def test_run_queue_wait_grows_while_other_processes_hold_the_cores():
    """More busy processes than cores: this one, busy too, must wait its turn on the run queue."""
    import subprocess
    import sys
    import time

    import pytest

    if steadiness.run_queue_wait_s() is None:
        pytest.skip("the kernel does not report run-queue waits (not Linux)")
    first, second = steadiness.run_queue_wait_s(), steadiness.run_queue_wait_s()
    assert 0 <= first <= second  # a running total
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_cores() + 1)]
    try:
        time.sleep(0.3)
        before = steadiness.run_queue_wait_s()
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:  # runnable all along: every moment off a core is a wait
            pass
        waited = steadiness.run_queue_wait_s() - before
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    # with cores+1 other busy processes, a fair scheduler gives this one about cores/(cores+2) of a core
    assert waited > 0.05


def test_run_queue_wait_is_none_where_the_kernel_does_not_say(monkeypatch):
    def no_proc(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(steadiness.os, "listdir", no_proc)
    assert steadiness.run_queue_wait_s() is None


def test_others_cpu_counts_a_process_beside_this_one_but_not_this_ones_own_work():
    """A one-thread hog uses about a core; this process's own busy loop is not counted."""
    import subprocess
    import sys
    import time

    import pytest

    if steadiness.others_cpu_s() is None:
        pytest.skip("the kernel does not report CPU time (not Linux)")

    def busy_for(seconds: float) -> tuple[float, float]:
        before, start = steadiness.others_cpu_s(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            pass
        return steadiness.others_cpu_s() - before, time.perf_counter() - start

    alone, alone_s = busy_for(0.5)
    if alone / alone_s > (os.cpu_count() or 1) - 1.3:
        # other work already holds every core but this one: a hog beside could not show its 0.3 cores
        pytest.skip(f"the machine is busy ({alone / alone_s:.2f} cores of other work)")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        beside, beside_s = busy_for(1.0)
    finally:
        hog.kill()
        hog.wait()
    # the hog gets most of a core (on one core, half of it); others' CPU on a quiet machine stays small,
    # but a shared CI machine has other work too: only the hog's share must stand out
    assert beside / beside_s > 0.4
    assert beside / beside_s > alone / alone_s + 0.3


def test_others_cpu_is_none_where_the_kernel_does_not_say(monkeypatch):
    def no_proc(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(steadiness, "open", no_proc, raising=False)  # shadows the builtin in that module only
    assert steadiness.others_cpu_s() is None
