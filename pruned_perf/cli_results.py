"""The results subcommands: compare, report, plot, baseline update|show, merge.

`add_commands(subparsers)` adds them to the main parser; each sets `func` to a handler that takes
the parsed args and returns an exit code. A UserError propagates: the main CLI prints it and exits 2.
Exit codes of `compare`: 0 no regression, 1 regression, 2 bad input.
"""
from __future__ import annotations

import sys

from tabulate import tabulate

from pruned_perf.analysis import ab_report, results as res
from pruned_perf.analysis.ab import has_ab
from pruned_perf.atomic import write_json_atomic, write_text_atomic
from pruned_perf.errors import UserError

EXIT_OK, EXIT_REGRESSION = 0, 1


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
    p.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    p.set_defaults(func=cmd_compare)


def _add_report(sub) -> None:
    p = _results_command(sub, "report", None, help="results tables (with a baseline: changes and verdicts)")
    p.add_argument("--format", choices=("github", "plain"), default="github")
    p.add_argument("--summary", action="store_true", help="fit GitHub's 1 MiB step summary")
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_report)


def _add_plot(sub) -> None:
    p = _results_command(sub, "plot", None, help="throughput-latency figure like the reference figure")
    p.add_argument("--out", required=True, metavar="FIG.png|FIG.svg")
    p.add_argument("--quality", action="store_true", help="held-out perplexity against throughput")
    p.set_defaults(func=cmd_plot)


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="store or list baselines")
    bsub = p.add_subparsers(dest="baseline_command", metavar="{update,show}", required=True)
    up = bsub.add_parser("update", help="store RESULTS.json as the baseline of its hardware and profile")
    up.add_argument("results", metavar="RESULTS.json")
    up.add_argument("--baselines-dir", default="baselines", metavar="DIR")
    up.add_argument("--force", action="store_true",
                    help="store even a run with failed points or widely spread rounds, and replace a baseline "
                         "that is unreadable or of other hardware or schema (its history starts anew)")
    up.set_defaults(func=cmd_baseline_update)
    show = bsub.add_parser("show", help="list stored baselines")
    show.add_argument("--baselines-dir", default="baselines", metavar="DIR")
    show.set_defaults(func=cmd_baseline_show)


def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="merge shard results of one run into one results file")
    p.add_argument("shards", nargs="+", metavar="SHARD.json")
    p.add_argument("-o", "--out", required=True, metavar="OUT.json")
    p.set_defaults(func=cmd_merge)


# ---------------------------------------------------------------- handlers


def _compare_with_baseline(args, current):
    """(baseline Results, Comparison) for --baseline, or (None, None) when none was asked for."""
    from pruned_perf.analysis.compare import compare_with_baseline

    if not args.baseline:
        return None, None
    return compare_with_baseline(current, args.baseline, args.baselines_dir, args.pyproject, args.allow_mismatch)


def cmd_compare(args) -> int:
    from pruned_perf.analysis.report import render

    if not args.baseline:
        raise UserError("compare needs a baseline: --baseline FILE|DIR|auto")
    current = res.load_results(args.results)
    if args.baseline == "auto" and has_ab(current):  # an A/B run: its pairs are the comparison
        return ab_report.compare(current, args.format, args.json, args.pyproject)
    _, comparison = _compare_with_baseline(args, current)
    print(render(current, comparison, fmt=args.format), end="")
    if args.json:
        write_json_atomic(args.json, comparison.to_dict())
    return EXIT_REGRESSION if comparison.has_regression else EXIT_OK


def cmd_report(args) -> int:
    from pruned_perf.analysis.report import render

    current = res.load_results(args.results)
    if not args.baseline and has_ab(current):
        text = ab_report.report(current, args.format)
    else:
        _, comparison = _compare_with_baseline(args, current)
        text = render(current, comparison, fmt=args.format, summary=args.summary)
    if args.out:
        write_text_atomic(args.out, text)
    else:
        print(text, end="")
    return EXIT_OK


def cmd_plot(args) -> int:
    from pruned_perf.analysis.plot import figure_format, plot

    figure_format(args.out)  # before loading anything: a typo should not cost a comparison
    current = res.load_results(args.results)
    if args.baseline == "auto" and not res.baseline_path(args.baselines_dir, current.slug, current.profile).is_file():
        print(f"warning: no baseline for {current.slug} profile {current.profile} under {args.baselines_dir}; "
              "plotting without one", file=sys.stderr)
        args.baseline = None
    if not args.baseline and has_ab(current):  # an A/B run: the base side's lines are the baseline
        baseline, comparison = ab_report.base_side(current), None
    else:
        baseline, comparison = _compare_with_baseline(args, current)
    plot(current, args.out, baseline=baseline, comparison=comparison, quality=args.quality)
    print(f"wrote {args.out}")
    return EXIT_OK


def cmd_baseline_update(args) -> int:
    path, runs = res.store_baseline(args.results, args.baselines_dir, force=args.force)
    print(f"stored {args.results} as baseline {path} ({runs} run(s) in its history)")
    return EXIT_OK


def cmd_baseline_show(args) -> int:
    entries = res.list_baselines(args.baselines_dir)
    if not entries:
        print(f"no baselines under {args.baselines_dir}")
        return EXIT_OK
    rows = [[e.slug, e.profile, e.points, e.oom_points, e.datetime, e.torch, e.transformers, e.error or "ok"]
            for e in entries]
    headers = ["hardware", "profile", "points", "OOM", "measured", "torch", "transformers", "status"]
    print(tabulate(rows, headers, tablefmt="simple", disable_numparse=True))
    return EXIT_OK


def cmd_merge(args) -> int:
    merged = res.merge_results(args.shards)
    write_json_atomic(args.out, merged)
    print(f"merged {len(args.shards)} files, {len(merged['benchmarks'])} points into {args.out}")
    return EXIT_OK
