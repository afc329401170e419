"""The one vocabulary of verdicts, torch-free: the statuses a point or a metric can get, the exit codes
that go with them, and what every judgement offers (`Judgement`): a run held against stored runs
(pruned_perf.analysis.compare) and an interleaved A/B (pruned_perf.analysis.ab_report) both implement
it, so the command line renders and exits the same way whatever kind of file it was given.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE = "regressed", "improved", "unchanged", "inconclusive"
NOISY = "noisy"  # a change that the machine's drift or load explains (a run against stored runs)
NEWLY_OOM, NO_LONGER_OOM = "newly-oom", "no-longer-oom"
NEW, MISSING = "new", "missing"  # a point only in the run, only in the baseline
CHANGED = "changed"  # the two sides timed different models (parameters differ): not a verdict on speed
FAILED = "failed"  # no verdict: the point could not be measured (a worker died, hung or erred; Ctrl-C)

REGRESSION_STATUSES = (REGRESSED, NEWLY_OOM)

EXIT_OK = 0  # nothing regressed
EXIT_REGRESSION = 1  # a regression, or a point that failed
EXIT_USAGE = 2  # bad input: one `error:` line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention): what ran is kept, nothing judged
# pytest's own codes for the perf suite's session, where they differ from the ones above
PYTEST_USAGE = 4


def is_regression(status: str) -> bool:
    return status in REGRESSION_STATUSES


class Judgement(ABC):
    """What a verdict over a results file offers the command line."""

    @property
    @abstractmethod
    def has_regression(self) -> bool:
        """Whether the run should fail a gate."""

    @abstractmethod
    def render(self, fmt: str = "github", summary: bool = False) -> str:
        """The tables a user reads (`fmt`: github or plain; `summary`: fit GitHub's step summary)."""

    @abstractmethod
    def to_dict(self) -> dict:
        """What `compare --json` writes."""

    @abstractmethod
    def plot(self, out_path, quality: bool = False):
        """Draw the figure (`quality`: held-out perplexity against throughput) to out_path; the Figure."""

    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.has_regression else EXIT_OK
