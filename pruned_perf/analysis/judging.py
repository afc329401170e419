"""Which judgement a results file gets (pruned_perf.analysis.verdicts.Judgement), so that `compare`,
`report` and `plot` never branch on the kind of file: an interleaved A/B is judged by its own pairs
unless a stored baseline is named; any other run against its baseline, or not at all. Torch-free.
"""
from __future__ import annotations

from pruned_perf.analysis.ab_report import ABJudgement, settings_from_pyproject
from pruned_perf.analysis.baselines import compare_with_baseline
from pruned_perf.analysis.report import BaselineJudgement
from pruned_perf.analysis.results import Results
from pruned_perf.analysis.verdicts import Judgement


def judge_results(results: Results, baseline: str | None, baselines_dir: str = "baselines",
                  pyproject: str | None = None, allow_mismatch: bool = False,
                  rederive: bool = False) -> Judgement:
    """`baseline`: a file, a directory, `auto` (the store's entry), or None (no comparison). An A/B's own
    verdicts stand for None and for `auto`; `rederive` judges them again from the stored pairs (with
    `pyproject`'s thresholds where given), as `compare` does."""
    if results.ab is not None and baseline in (None, "auto"):
        judgement = ABJudgement(results, results.ab)
        if not rederive:
            return judgement
        return judgement.rederived(settings_from_pyproject(results.ab, pyproject) if pyproject else None)
    if not baseline:
        return BaselineJudgement(results)
    stored, comparison = compare_with_baseline(results, baseline, baselines_dir, pyproject, allow_mismatch)
    return BaselineJudgement(results, comparison, stored)
