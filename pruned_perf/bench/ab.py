"""The interleaved A/B of a perf run (`pytest perf/ --pp-ab BASE`): two worker processes, one per side,
timed in pairs of adjacent rounds. Knows nothing of pytest (pruned_perf.bench.ab_plugin is the glue).

- head: the source tree pruned_perf is imported from, on this interpreter;
- base: a git revision of that repository, checked out with `git worktree add --detach` under the
  cache directory (the user's checkout and index are never touched), on this interpreter; or another
  Python interpreter on the head's tree (to compare torch or transformers versions).

Each side is a long-lived `python -m pruned_perf.bench.ab_worker` with cwd and PYTHONPATH at its tree,
so it sizes, prunes, builds and measures with its own code, planning and scoring in a cache of its own
(cache_dir/ab-plans/ROLE: ABRun.side_cache); this process only drives. Per point: a
warm-up on both sides, the same calls per round on both (the larger of the two sizings), then pairs of
rounds in counterbalanced order (the first pair's order drawn at random, then alternating) in looks of
`pairs_per_look` up to `max_pairs`, judged after each look (pruned_perf.analysis.paired) until settled.
Every pair is appended to the point log as it is measured.

Faults: running out of memory is the point's result; a worker that dies or hangs (no answer to a round
within max(timeout floor, 10 x its warm-up round), to any other step within 60 x the floor) is killed,
its point fails with its exit status and the tail of its stderr, and it is restarted for the next
point. `close` ends both workers and removes the worktree, also after Ctrl-C and errors; a worktree
left by an A/B that was killed outright is removed by the next one.
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pruned_perf.analysis.paired import ABSettings, Pair, PointAB, SideRound, judge, settled
from pruned_perf.bench.ab_worker import PROTOCOL
from pruned_perf.core.errors import UserError
from pruned_perf.core.schema import Measurement, Point

ROLES = ("base", "head")
# A worker must say hello (import torch and transformers, describe itself) within this long.
HELLO_TIMEOUT_S = 600.0
# A round may take this many times the side's warm-up round before the worker counts as hung.
HANG_FACTOR = 10.0
DEFAULT_TIMEOUT_FLOOR_S = 30.0
# Steps with no warm-up to scale from (a point's start: build, prune, warm up; its finish; rounds of a
# side whose other side ran out of memory) may take this many times the floor: 30 min by default.
SLOW_STEP_FACTOR = 60.0
STDERR_TAIL_LINES = 12


class ABError(UserError):
    """The A/B cannot start: a base that cannot be resolved, imported or started."""


class WorkerFailed(RuntimeError):
    """A worker died or hung: its point fails with this message, and the worker is restarted."""


class ABPointError(RuntimeError):
    """A side could not measure a point (an error other than running out of memory)."""


@dataclass(frozen=True)
class Side:
    """Where one side's worker runs: its interpreter and its source tree (cwd, first on PYTHONPATH)."""

    role: str
    spec: str  # what the user asked for: the revision or interpreter; "working tree" for the head
    python: str
    tree: Path
    worktree: Path | None = None  # the git worktree this A/B added for it, removed at the end


# ---- resolving the base ------------------------------------------------------------------------

def head_tree() -> Path:
    """The directory pruned_perf is imported from here: the head's source."""
    import pruned_perf

    return Path(pruned_perf.__file__).resolve().parent.parent


def _git(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)


def resolve_base(spec: str, tree: Path, cache_dir: Path) -> Side:
    """The base side for `--pp-ab spec`: an existing interpreter file, else a git revision of the
    repository `tree` lies in (checked out into a new worktree under cache_dir/ab)."""
    if os.path.isfile(spec):
        if not os.access(spec, os.X_OK):
            raise ABError(f"--pp-ab {spec}: the interpreter is not executable")
        return Side("base", spec, os.path.abspath(spec), tree)
    top = _git(tree, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ABError(f"--pp-ab {spec} is no Python interpreter (no such file), and pruned_perf is imported "
                      f"from {tree}, which is not a git checkout, so it cannot be a revision either")
    root = Path(top.stdout.strip())
    sha = _git(root, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if sha.returncode != 0:
        raise ABError(f"--pp-ab {spec} is neither a git revision of {root} nor a Python interpreter "
                      "(no such file)")
    sha = sha.stdout.strip()
    remove_stale_worktrees(cache_dir.resolve() / "ab")
    # The driver's pid in the name: a later A/B can tell a worktree whose driver is gone.
    worktree = cache_dir.resolve() / "ab" / f"{sha[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    worktree.parent.mkdir(parents=True, exist_ok=True)
    added = _git(root, "worktree", "add", "--detach", "--quiet", str(worktree), sha)
    if added.returncode != 0:
        raise ABError(f"--pp-ab {spec}: git worktree add {worktree} failed: {added.stderr.strip()}")
    return Side("base", spec, sys.executable, worktree / tree.relative_to(root), worktree)


def remove_worktree(worktree: Path) -> None:
    """Remove a worktree this A/B added, and its registration in the repository."""
    if worktree.exists():
        common = _git(worktree, "rev-parse", "--git-common-dir")
        removed = _git(worktree, "worktree", "remove", "--force", str(worktree))
        if removed.returncode != 0:
            shutil.rmtree(worktree, ignore_errors=True)
        if common.returncode == 0:
            _git(worktree.parent, "--git-dir", str(Path(worktree, common.stdout.strip()).resolve()),
                 "worktree", "prune")


def remove_stale_worktrees(ab_dir: Path) -> None:
    """Remove the worktrees of A/Bs whose driver no longer runs (killed outright: no `close`)."""
    if not ab_dir.is_dir():
        return
    for worktree in ab_dir.iterdir():
        parts = worktree.name.split("-")
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            remove_worktree(worktree)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# ---- one worker ----------------------------------------------------------------------------------

class WorkerProcess:
    """One side's worker: started, spoken to one request at a time, ended."""

    def __init__(self, side: Side, log_dir: Path):
        self.side = side
        self.stderr_path = log_dir / f"{side.role}-{uuid.uuid4().hex[:6]}.stderr"
        self.describe: dict = {}
        self._lines: queue.Queue = queue.Queue()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(side.tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        with open(self.stderr_path, "w", encoding="utf-8") as stderr:
            # its own session: a Ctrl-C at the terminal reaches the driver, which ends the workers
            self.proc = subprocess.Popen([side.python, "-m", "pruned_perf.bench.ab_worker", "--role", side.role],
                                         cwd=side.tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr, text=True, encoding="utf-8", start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of its stdout: it exited

    def hello(self) -> dict:
        """Wait for the worker's hello; check its protocol and that it imported its own side's code."""
        answer = self.receive(HELLO_TIMEOUT_S, "say hello")
        hello = answer.get("hello") if isinstance(answer, dict) else None
        if not isinstance(hello, dict):
            raise WorkerFailed(f"{self.name} sent {str(answer)[:200]!r} instead of its hello")
        if hello.get("protocol") != PROTOCOL:
            raise WorkerFailed(f"{self.name} speaks A/B protocol {hello.get('protocol')!r}; this pruned_perf "
                               f"speaks {PROTOCOL}")
        self.describe = dict(hello.get("describe") or {})
        expected = (self.side.tree / "pruned_perf").resolve()
        imported = self.describe.get("pruned_perf")
        if imported is None or Path(imported).resolve() != expected:
            raise WorkerFailed(f"{self.name} imported pruned_perf from {imported}, not from its tree {expected}")
        return self.describe

    @property
    def name(self) -> str:
        return f"the {self.side.role} worker ({self.side.spec})"

    def request(self, message: dict, timeout_s: float | None, what: str) -> dict:
        self.send(message)
        return self.receive(timeout_s, what)

    def send(self, message: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            raise WorkerFailed(self._died(f"{message.get('op')} request")) from None

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
        return f"{self.name} exited with status {code} before it could {what}; its stderr ends:\n{self.stderr_tail()}"

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


# ---- the A/B ------------------------------------------------------------------------------------

@dataclass
class ABResult:
    """One point's A/B: the head's Measurement (the benchmark point), the base's, and the verdict."""

    head: Measurement
    base: Measurement | None
    base_dict: dict  # the base worker's own record, kept even where this schema cannot read it
    ab: PointAB

    @property
    def id(self) -> str:
        return self.head.id

    @property
    def oom(self) -> bool:
        return self.head.oom

    def to_dict(self) -> dict:
        """extra_info of the point: the head's fields, plus "ab" and "ab_base"."""
        return {**self.head.to_dict(), "ab": self.ab.to_dict(), "ab_base": self.base_dict}


class ABRun:
    """Both workers of one A/B session, and the point schedule."""

    def __init__(self, base_spec: str, options: dict, cache_dir: str | Path, settings_for: Callable[[str], ABSettings],
                 family: int, log, timeout_floor_s: float = DEFAULT_TIMEOUT_FLOOR_S, solo_rounds: int = 5):
        self.base_spec, self.options = base_spec, _absolute_paths(options)
        self.cache_dir = Path(cache_dir).resolve()
        self.settings_for, self.family, self.log = settings_for, family, log
        self.timeout_floor_s, self.solo_rounds = timeout_floor_s, solo_rounds
        self.sides: dict[str, Side] = {}
        self.workers: dict[str, WorkerProcess | None] = {}
        self.described: dict[str, dict] = {}
        self.base_points: set[str] = set()
        self.results: list[ABResult] = []
        self._log_dir = Path(tempfile.mkdtemp(prefix="pp-ab-"))
        self._random = random.Random()

    def start(self) -> None:
        """Resolve the base and start both workers; any failure is one ABError (the caller closes)."""
        tree = head_tree()
        self.sides["head"] = Side("head", "working tree", sys.executable, tree)
        self.sides["base"] = resolve_base(self.base_spec, tree, self.cache_dir)
        try:
            self._start_workers(ROLES)
        except WorkerFailed as exc:
            hint = (" (a revision from before the A/B: it has no worker)"
                    if "No module named pruned_perf.bench.ab_worker" in str(exc) else "")
            raise ABError(f"--pp-ab {self.base_spec}: cannot start the A/B: {_one_line(str(exc))}{hint}") from None

    def _start_workers(self, roles) -> None:
        started = {role: WorkerProcess(self.sides[role], self._log_dir) for role in roles}
        self.workers.update(started)  # registered at once: close() ends them whatever happens next
        try:
            self._greet(started)
        except WorkerFailed:
            for role, worker in started.items():
                worker.kill()
                self.workers[role] = None  # started afresh before the next point
            raise

    def _greet(self, started: dict) -> None:
        for role, worker in started.items():
            self.described[role] = {"role": role, "spec": self.sides[role].spec, **worker.hello()}
        for role, worker in started.items():
            worker.send({"op": "setup", "options": self.options, "cache_dir": str(self.side_cache(role))})
        for role, worker in started.items():
            answer = worker.receive(HELLO_TIMEOUT_S, "set up the sweep")
            if "error" in answer:
                worker.kill()
                raise WorkerFailed(f"{worker.name} cannot measure this selection: {answer['error']}")
            if isinstance(answer.get("threads"), int):
                self.described[role]["threads"] = answer["threads"]
            if role == "base":
                self.base_points = set(answer["points"])

    def side_cache(self, role: str) -> Path:
        """Each side plans and scores its variants in its own cache. A plan is one side's calibration
        and perplexity one side's long forward passes: shared, the side that got there first did that
        work and the other only loaded the result, and the worker that did it stayed slower for the
        rest of the session (docs/verdict-trials.md, "fourth round"). Apart, both sides do
        the same work, or both load."""
        return self.cache_dir / "ab-plans" / role

    def describe(self) -> dict:
        """machine_info.pruned_perf["ab"]: each worker's description and the settings."""
        return {**{role: dict(self.described.get(role, {})) for role in ROLES},
                "settings": self.settings_for(None).to_dict()}

    def measure(self, point: Point, nodeid: str) -> ABResult:
        """The A/B of one point; a worker that died or hung fails it (WorkerFailed) and is restarted
        before the next point."""
        dead = [role for role in ROLES if self.workers.get(role) is None]
        if dead:
            self._start_workers(dead)
        if point.id not in self.base_points:
            raise ABPointError(f"the base ({self.base_spec}) does not measure {point.id} (a method or model it lacks)")
        settings = self.settings_for(point.id)
        slow_s = self.slow_step_s
        started = {role: self._request(role, {"op": "start", "point": point.id}, slow_s, "warm up") for role in ROLES}
        oom = {role for role in ROLES if started[role].get("oom")}
        pairs: list[Pair] = []
        if not oom:
            pairs, oom = self._pairs(point, nodeid, started, settings)
        for role in ROLES:  # the other side ran out of memory first: this side's point still gets rounds
            if role not in oom and not pairs:
                self._solo_rounds(role)
        finished = {role: self._request(role, {"op": "finish"}, slow_s, "finish the point")["measurement"]
                    for role in ROLES}
        head, base = Measurement.from_dict(finished["head"]), _readable(finished["base"])
        result = ABResult(head, base, finished["base"], judge(pairs, base, head, settings, self.family, final=True))
        self.results.append(result)
        return result

    def _pairs(self, point: Point, nodeid: str, started: dict, settings: ABSettings) -> tuple[list[Pair], set]:
        """Pairs of rounds in looks until the verdict settles; and the side that ran out of memory, if one
        did (the pairs stop there)."""
        calls = max(started[role]["calls"] for role in ROLES)
        timeouts = {}
        for role in ROLES:
            self._request(role, {"op": "size", "calls": calls}, None, "size its rounds")
            warmup_round_s = calls * started[role]["warmup_s"][-1]
            timeouts[role] = max(self.timeout_floor_s, HANG_FACTOR * warmup_round_s)
        first = self._random.choice(ROLES)
        order = (first, ROLES[1 - ROLES.index(first)])
        pairs: list[Pair] = []
        while True:
            look = min(len(pairs) + settings.pairs_per_look, settings.max_pairs)
            while len(pairs) < look:
                rounds = {}
                for role in order if len(pairs) % 2 == 0 else order[::-1]:
                    answer = self._request(role, {"op": "round"}, timeouts[role], "answer a round")
                    if answer.get("oom"):
                        # the side that went first has one round more than the pairs: it still counts
                        return pairs, {role}
                    rounds[role] = SideRound.from_dict(answer["round"])
                pair = Pair(order[len(pairs) % 2], rounds["base"], rounds["head"])
                pairs.append(pair)
                self.log.append_pair(pair, point.id, nodeid)
            ab = judge(pairs, None, None, settings, self.family, final=len(pairs) >= settings.max_pairs)
            if settled(ab, settings):
                return pairs, set()

    @property
    def slow_step_s(self) -> float:
        """The time limit of a step with no warm-up to scale from (SLOW_STEP_FACTOR)."""
        return SLOW_STEP_FACTOR * self.timeout_floor_s

    def _solo_rounds(self, role: str) -> None:
        for _ in range(self.solo_rounds):
            if self._request(role, {"op": "round"}, self.slow_step_s, "answer a round").get("oom"):
                return

    def _request(self, role: str, message: dict, timeout_s: float | None, what: str) -> dict:
        worker = self.workers[role]
        try:
            answer = worker.request(message, timeout_s, what)
        except WorkerFailed:
            self.workers[role] = None  # restarted before the next point
            raise
        if "error" in answer:
            detail = answer.get("traceback") or answer["error"]
            raise ABPointError(f"the {role} side ({self.sides[role].spec}) failed to {what}: {answer['error']}\n{detail}")
        return answer

    def close(self) -> None:
        """End both workers and remove the base's worktree. Safe to call more than once."""
        for role, worker in list(self.workers.items()):
            if worker is not None:
                worker.close()
            self.workers[role] = None
        base = self.sides.get("base")
        if base is not None and base.worktree is not None:
            remove_worktree(base.worktree)
        shutil.rmtree(self._log_dir, ignore_errors=True)


def _absolute_paths(options: dict) -> dict:
    """The options as the workers get them: a model given as a directory becomes an absolute path, since
    the workers run in their trees, not in this process's directory."""
    options = dict(options)
    if options.get("models"):
        options["models"] = ",".join(os.path.abspath(name.strip()) if os.path.isdir(name.strip()) else name
                                     for name in options["models"].split(","))
    return options


def _readable(record: dict) -> Measurement | None:
    """The base's Measurement where this schema can read it (an older base may write another)."""
    try:
        return Measurement.from_dict(record)
    except (UserError, TypeError):
        return None


def _one_line(text: str) -> str:
    """An error for the `error:` line: the message and the last line of a worker's stderr."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text
    return f"{lines[0]} {lines[-1]}"


def ab_line(result: ABResult) -> str:
    """The live line of a point, once its verdict settles:
    `smollm2-135m dense M8: 12 pairs, new/base 1.19x [1.12, 1.26], regressed`."""
    m, ab = result.head, result.ab
    head = f"pruned_perf A/B: {m.model} {m.method} in{m.input_tokens} out{m.output_tokens} M{m.batch_size} {m.backend}:"
    latency = ab.metric("latency_s")
    if latency is None or latency.ratio is None:
        return f"{head} {ab.status} ({ab.reason})"
    ci = f"[{_ratio(latency.ci_low)}, {_ratio(latency.ci_high)}]"
    reason = f" ({ab.reason})" if ab.status != "unchanged" and ab.reason else ""
    return f"{head} {len(ab.pairs)} pairs, new/base {latency.ratio:.2f}x {ci}, {ab.status}{reason}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
