"""The results subcommands: compare, report, plot, baseline update|show, merge.

`add_commands(subparsers)` adds them to the main parser; each sets `func` to a handler that takes its
typed arguments (a frozen dataclass, made from the parsed Namespace by `typed`) and returns an exit
code. A UserError propagates: the main CLI prints it and exits 2.
Exit codes of `compare` (pruned_perf.analysis.verdicts): 0 no regression, 1 regression (or, in an A/B, a
point that failed), 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields, replace

from tabulate import tabulate

from pruned_perf.analysis import baselines, merge
from pruned_perf.analysis import results as res
from pruned_perf.analysis.judging import judge_results
from pruned_perf.analysis.verdicts import EXIT_OK
from pruned_perf.core.atomic import (PARENTS_HELP, check_output_file, check_writable_dir, write_json_atomic,
                                write_text_atomic)
from pruned_perf.core.errors import UserError


@dataclass(frozen=True)
class BaselineChoice:
    """Which stored results a run is set against: --baseline and the options that go with it."""

    baseline: str | None  # a file, a directory, "auto", or None: no baseline
    baselines_dir: str
    allow_mismatch: bool
    pyproject: str | None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> BaselineChoice:
        return cls(ns.baseline, ns.baselines_dir, ns.allow_mismatch, ns.pyproject)


@dataclass(frozen=True)
class CompareArgs:
    """`pruned-perf compare`."""

    results: str
    against: BaselineChoice
    format: str
    json: str | None


@dataclass(frozen=True)
class ReportArgs:
    """`pruned-perf report`."""

    results: str
    against: BaselineChoice
    format: str
    summary: bool
    out: str | None


@dataclass(frozen=True)
class PlotArgs:
    """`pruned-perf plot`."""

    results: str
    against: BaselineChoice
    out: str
    quality: bool


@dataclass(frozen=True)
class BaselineUpdateArgs:
    """`pruned-perf baseline update`."""

    results: str
    baselines_dir: str
    force: bool


@dataclass(frozen=True)
class MergeArgs:
    """`pruned-perf merge`."""

    shards: list[str]
    out: str


def _typed(cls):
    """A parser default that makes `cls` from the Namespace attributes of its fields' names (`against`:
    the BaselineChoice options)."""
    def make(ns: argparse.Namespace):
        return cls(**{f.name: BaselineChoice.from_namespace(ns) if f.name == "against" else getattr(ns, f.name)
                      for f in fields(cls)})
    return make


def add_commands(subparsers) -> None:
    _add_compare(subparsers)
    _add_report(subparsers)
    _add_plot(subparsers)
    _add_baseline(subparsers)
    _add_merge(subparsers)


# ---------------------------------------------------------------- parsers


def _baseline_options(p, default: str | None) -> None:
    p.add_argument("--baseline", default=default, metavar="FILE|DIR|auto",
                   help="baseline results: a file, a directory (<dir>/<profile>.json or "
                        "<dir>/<slug>/<profile>.json), or auto = <baselines-dir>/<slug>/<profile>.json"
                        + (f" (default {default})" if default else ""))
    p.add_argument("--baselines-dir", default="baselines", metavar="DIR", help="baseline store (default baselines)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare even when the hardware fingerprints differ (reported as a warning)")
    p.add_argument("--pyproject", default=None, metavar="PATH",
                   help="pyproject.toml with [tool.pruned_perf] thresholds (default ./pyproject.toml if present)")


def _results_command(sub, name: str, baseline_default: str | None, **parser_kwargs):
    """A subcommand that reads RESULTS.json and may compare it with a baseline."""
    p = sub.add_parser(name, **parser_kwargs)
    p.add_argument("results", metavar="RESULTS.json")
    _baseline_options(p, baseline_default)
    return p


def _add_compare(sub) -> None:
    p = _results_command(sub, "compare", "auto", help="compare results with a baseline; exit 1 on a regression",
                         description="Compare RESULTS.json with a baseline and print the table. "
                                     "Exit 0: no regression, 1: regression, 2: bad input.")
    p.add_argument("--format", choices=("github", "plain"), default="github")
    p.add_argument("--json", metavar="FILE", help=f"also write the verdicts as JSON ({PARENTS_HELP})")
    p.set_defaults(func=cmd_compare, typed=_typed(CompareArgs))


def _add_report(sub) -> None:
    p = _results_command(sub, "report", None, help="results tables (with a baseline: changes and verdicts)")
    p.add_argument("--format", choices=("github", "plain"), default="github")
    p.add_argument("--summary", action="store_true", help="fit GitHub's 1 MiB step summary")
    p.add_argument("--out", metavar="FILE", help=f"write here instead of stdout ({PARENTS_HELP})")
    p.set_defaults(func=cmd_report, typed=_typed(ReportArgs))


def _add_plot(sub) -> None:
    p = _results_command(sub, "plot", None, help="throughput-latency figure like the reference figure")
    p.add_argument("--out", required=True, metavar="FIG.png|FIG.svg", help=f"the figure ({PARENTS_HELP})")
    p.add_argument("--quality", action="store_true", help="held-out perplexity against throughput")
    p.set_defaults(func=cmd_plot, typed=_typed(PlotArgs))


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="store or list baselines")
    bsub = p.add_subparsers(dest="baseline_command", metavar="{update,show}", required=True)
    up = bsub.add_parser("update", help="store RESULTS.json as the baseline of its hardware and profile")
    up.add_argument("results", metavar="RESULTS.json")
    up.add_argument("--baselines-dir", default="baselines", metavar="DIR",
                    help=f"the baseline store; the file goes to DIR/<hardware>/<profile>.json ({PARENTS_HELP}; "
                         "default baselines)")
    up.add_argument("--force", action="store_true",
                    help="store even a run with failed points or widely spread rounds, and replace a baseline "
                         "that is unreadable or of other hardware or schema (its history starts anew)")
    up.set_defaults(func=cmd_baseline_update, typed=_typed(BaselineUpdateArgs))
    show = bsub.add_parser("show", help="list stored baselines")
    show.add_argument("--baselines-dir", default="baselines", metavar="DIR")
    show.set_defaults(func=cmd_baseline_show, typed=lambda ns: ns.baselines_dir)


def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="merge shard results of one run into one results file")
    p.add_argument("shards", nargs="+", metavar="SHARD.json")
    p.add_argument("-o", "--out", required=True, metavar="OUT.json", help=f"the merged results ({PARENTS_HELP})")
    p.set_defaults(func=cmd_merge, typed=_typed(MergeArgs))


# ---------------------------------------------------------------- handlers


def _judgement(args, current, rederive: bool = False):
    """The judgement of `current` against --baseline (pruned_perf.analysis.judging)."""
    against = args.against
    return judge_results(current, against.baseline, against.baselines_dir, against.pyproject,
                         against.allow_mismatch, rederive=rederive)


def cmd_compare(args: CompareArgs) -> int:
    if not args.against.baseline:
        raise UserError("compare needs a baseline: --baseline FILE|DIR|auto")
    if args.json:
        check_output_file(args.json, "--json")  # before the work, not after it
    judgement = _judgement(args, res.load_results(args.results), rederive=True)
    print(judgement.render(fmt=args.format), end="")
    if args.json:
        write_json_atomic(args.json, judgement.to_dict())
    return judgement.exit_code()


def cmd_report(args: ReportArgs) -> int:
    if args.out:
        check_output_file(args.out, "--out")
    text = _judgement(args, res.load_results(args.results)).render(fmt=args.format, summary=args.summary)
    if args.out:
        write_text_atomic(args.out, text)
    else:
        print(text, end="")
    return EXIT_OK


def cmd_plot(args: PlotArgs) -> int:
    from pruned_perf.analysis.plot import figure_format

    figure_format(args.out)  # before loading anything: a typo should not cost a comparison
    check_output_file(args.out, "--out")
    current = res.load_results(args.results)
    against = args.against
    store = against.baselines_dir
    if (against.baseline == "auto" and current.ab is None
            and not baselines.baseline_path(store, current.slug, current.profile).is_file()):
        print(f"warning: no baseline for {current.slug} profile {current.profile} under {store}; "
              "plotting without one", file=sys.stderr)
        args = replace(args, against=replace(against, baseline=None))
    _judgement(args, current).plot(args.out, quality=args.quality)
    print(f"wrote {args.out}")
    return EXIT_OK


def cmd_baseline_update(args: BaselineUpdateArgs) -> int:
    check_writable_dir(args.baselines_dir, "--baselines-dir")
    path, runs = baselines.store_baseline(args.results, args.baselines_dir, force=args.force)
    print(f"stored {args.results} as baseline {path} ({runs} run(s) in its history)")
    return EXIT_OK


def cmd_baseline_show(baselines_dir: str) -> int:
    entries = baselines.list_baselines(baselines_dir)
    if not entries:
        print(f"no baselines under {baselines_dir}")
        return EXIT_OK
    rows = [[e.slug, e.profile, e.points, e.oom_points, e.datetime, e.torch, e.transformers, e.error or "ok"]
            for e in entries]
    headers = ["hardware", "profile", "points", "OOM", "measured", "torch", "transformers", "status"]
    print(tabulate(rows, headers, tablefmt="simple", disable_numparse=True))
    return EXIT_OK


def cmd_merge(args: MergeArgs) -> int:
    check_output_file(args.out, "--out")
    merged = merge.merge_results(args.shards)
    write_json_atomic(args.out, merged.to_json())
    print(f"merged {len(args.shards)} files, {len(merged.points)} points into {args.out}")
    return EXIT_OK
