"""One side's worker process of an A/B (pruned_perf.bench.ab_worker), as the driver sees it: started in
an environment the same size as the other side's, spoken to one JSON request at a time with a time
limit, and ended (killed where it hangs).
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import uuid
from pathlib import Path

from pruned_perf.bench.ab_worker import PROTOCOL
from pruned_perf.bench.ab_worktree import Side

# A worker must say hello (import torch and transformers, describe itself) within this long.
HELLO_TIMEOUT_S = 600.0
STDERR_TAIL_LINES = 12
PAD = "PP_AB_PAD"  # an environment variable that makes both sides' environments the same size


class WorkerFailed(RuntimeError):
    """A worker died or hung: its point fails with this message, and the worker is restarted."""


def side_environments(sides: dict) -> dict:
    """Each side's environment: this one's, with its tree first on PYTHONPATH, padded so that every side's
    environment has the same size in bytes. The environment lies on the stack at a process's start, and
    its size moves where everything after it lands: a known source of a few percent between two
    processes of identical code."""
    envs = {}
    for role, side in sides.items():
        env = {k: v for k, v in os.environ.items() if k != PAD}
        env["PYTHONPATH"] = os.pathsep.join([str(side.tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        envs[role] = env
    size = {role: sum(len(k) + len(v) + 2 for k, v in env.items()) for role, env in envs.items()}
    largest = max(size.values())
    for role, env in envs.items():
        env[PAD] = "x" * (largest - size[role])
    return envs


class WorkerProcess:
    """One side's worker: started, spoken to one request at a time, ended."""

    def __init__(self, side: Side, env: dict, cwd: Path, log_dir: Path):
        self.side = side
        self.stderr_path = log_dir / f"{side.role}-{uuid.uuid4().hex[:6]}.stderr"
        self._lines: queue.Queue = queue.Queue()
        cwd.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.stderr_path, "w", encoding="utf-8") as stderr:
                # its own session: a Ctrl-C at the terminal reaches the driver, which ends the workers
                self.proc = subprocess.Popen([side.python, "-m", "pruned_perf.bench.ab_worker", "--role", side.role],
                                             cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=stderr, text=True, encoding="utf-8", start_new_session=True)
        except OSError as exc:
            raise WorkerFailed(f"{self.name} could not start: {exc}") from None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of its stdout: it exited

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def name(self) -> str:
        return f"the {self.side.role} worker ({self.side.spec})"

    def hello(self) -> dict:
        """Wait for the worker's hello; check its protocol and that it imported its own side's code;
        its description."""
        answer = self.receive(HELLO_TIMEOUT_S, "say hello")
        hello = answer.get("hello") if isinstance(answer, dict) else None
        if not isinstance(hello, dict):
            raise WorkerFailed(f"{self.name} sent {str(answer)[:200]!r} instead of its hello")
        if hello.get("protocol") != PROTOCOL:
            raise WorkerFailed(f"{self.name} speaks A/B protocol {hello.get('protocol')!r}; this pruned_perf "
                               f"speaks {PROTOCOL}")
        described = dict(hello.get("describe") or {})
        expected = (self.side.tree / "pruned_perf").resolve()
        imported = described.get("pruned_perf")
        if imported is None or Path(imported).resolve() != expected:
            raise WorkerFailed(f"{self.name} imported pruned_perf from {imported}, not from its tree {expected}")
        return described

    def request(self, message: dict, timeout_s: float | None, what: str) -> dict:
        self.send(message)
        return self.receive(timeout_s, what)

    def send(self, message: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            raise WorkerFailed(self._died(f"answer its {message.get('op')} request")) from None

    def receive(self, timeout_s: float | None, what: str) -> dict:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise WorkerFailed(f"{self.name} did not {what} within {timeout_s:.0f} s: it hung, and was killed; "
                               f"its stderr ends:\n{self.stderr_tail()}") from None
        if line is None:
            self.kill()
            raise WorkerFailed(self._died(what))
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self.kill()
            raise WorkerFailed(f"{self.name} wrote {line[:200]!r} on its protocol stream") from None

    def _died(self, what: str) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        how = (f"was killed by signal {-code}" if isinstance(code, int) and code < 0
               else f"exited with status {code}")
        return f"{self.name} {how} before it could {what}; its stderr ends:\n{self.stderr_tail()}"

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"

    def kill(self) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGKILL)
        self._wait(10)

    def close(self) -> None:
        """End of stdin ends a worker between requests; one caught mid-round is terminated, then killed."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self._wait(5):
            return
        _signal_group(self.proc, signal.SIGTERM)
        if not self._wait(5):
            self.kill()

    def _wait(self, timeout_s: float) -> bool:
        try:
            self.proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False


def _signal_group(proc: subprocess.Popen, sig) -> None:
    try:
        os.killpg(proc.pid, sig)  # the worker and anything it started
    except (ProcessLookupError, PermissionError):
        pass
