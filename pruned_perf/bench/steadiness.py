"""The steadiness probe: a short fixed workload timed before every timed round of a point and after the
last (untimed: pytest-benchmark's `setup` hook), and two load signals recorded with each round.

The probe's time says how fast the machine was while the point ran. Between two runs of the same
code, a point that got slower while the probe got slower by a like amount tells of a busier machine,
not of a slower code path, and the comparison says `noisy` instead of `regressed`
(pruned_perf.analysis.compare).

The probe samples the machine between rounds, so it misjudges how much other processes' threads on
the same cores slow a small model during them. So each round also records how long this process's
threads waited on the kernel's run queue while it ran (`run_queue_wait_s`, Linux schedstat): time
they were ready to run but another task held the core. A slower code path on a steady machine (fewer
threads, more work) does not raise it.

The wait does not see what runs beside a process whose threads never queue (one thread of ours beside
a one-thread hog on two cores), nor the hypervisor giving this virtual machine's CPUs to other guests
(steal time). So each round also records the CPU time that went to anything but this process while
it ran (`others_cpu_s`: all CPUs' busy and stolen time from /proc/stat, less this process's own CPU
time). What each signal read on a quiet and on a loaded 2-core CPU: docs/verdict-trials.md ("Third
trials", "Fourth trials").

The probe runs on the point's device with as many threads as the process may use cores, whatever the
timed code was configured with (OMP_NUM_THREADS, torch.set_num_threads): the thread count is part
of the code path under test, while the probe measures the machine. A run with half the threads is a
genuinely slower code path on a steady machine and must still be caught.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch

from pruned_perf.bench.fingerprint import cpu_cores

# About 15-30 ms on a 2-core CPU: long enough to average over scheduler ticks, short enough that six
# samples per point cost little next to a point's warm-up and rounds.
PROBE_STEPS = 200
PROBE_ROWS, PROBE_WIDTH = 64, 384


def run_queue_wait_s() -> float | None:
    """Seconds all threads of this process have so far spent runnable but waiting for a CPU (the
    second field of /proc/self/task/*/schedstat); None where the kernel does not say (not Linux)."""
    total_ns, seen = 0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", encoding="ascii") as f:
                total_ns += int(f.read().split()[1])
            seen = True
        except (OSError, IndexError, ValueError):  # a thread that ended between listdir and open
            continue
    return total_ns / 1e9 if seen else None


def others_cpu_s(peers: tuple = ()) -> float | None:
    """CPU seconds that, so far, went to anything but this process and the processes `peers`: the busy and
    stolen time of all CPUs (first line of /proc/stat) less this process's own CPU time and theirs; None
    where the kernel does not say (not Linux). Ticks of 1/CLK_TCK s: read it over rounds of a tenth of a
    second or more. An A/B worker passes the other side's worker and the driver as `peers`: their CPU is
    the A/B's own, not load from outside it."""
    busy = machine_busy_s()
    if busy is None:
        return None
    peer = processes_cpu_s(peers) if peers else 0.0
    return busy - time.process_time() - (peer or 0.0)


def machine_busy_s() -> float | None:
    """The busy and stolen CPU seconds of all CPUs so far (/proc/stat); None where the kernel does not say."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def processes_cpu_s(pids) -> float | None:
    """CPU seconds the processes `pids` (all their threads) have used so far (/proc/PID/stat: user and
    system time); a process that has ended counts 0. None where the kernel does not say (not Linux)."""
    if not os.path.isdir("/proc/self"):
        return None
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def outside_load(pids, window_s: float) -> float | None:
    """Cores' worth of CPU that anything but the processes `pids` used over the next `window_s` seconds
    (this process sleeps meanwhile); None where the kernel does not say. An A/B's driver samples it while
    its workers are idle: what is left is load from outside the A/B."""
    pids = tuple(pids)
    busy, ours = machine_busy_s(), processes_cpu_s(pids)
    if busy is None or ours is None:
        return None
    time.sleep(window_s)
    busy_after, ours_after = machine_busy_s(), processes_cpu_s(pids)
    if busy_after is None or ours_after is None:
        return None
    return max(0.0, (busy_after - busy) - (ours_after - ours)) / window_s


def probe(device, samples: int = 3) -> list[float]:
    """Wall seconds of `samples` runs of the fixed workload on `device`."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_ROWS, PROBE_WIDTH, generator=generator).to(device)
    w = (torch.randn(PROBE_WIDTH, PROBE_WIDTH, generator=generator) / PROBE_WIDTH**0.5).to(device)
    with _machine_threads(device):
        _run(x, w, device)  # first call: allocation and kernel selection are not the machine's speed
        return [_run(x, w, device) for _ in range(samples)]


def _run(x: torch.Tensor, w: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    start_s = time.perf_counter()
    for _ in range(PROBE_STEPS):
        x = torch.tanh(x @ w)
    _sync(device)
    return time.perf_counter() - start_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _machine_threads(device: torch.device):
    """On the CPU, the probe uses every core the process may run on; the setting is restored after."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(cpu_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
