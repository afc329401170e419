"""The history subcommands: `history add|import|show|check`, `bisect` and `site`.

`add_commands(subparsers)` adds them to the main parser; each handler takes its typed arguments and
returns an exit code. A UserError propagates: the main CLI prints it and exits 2. `history check` and
`bisect` exit 1 only for a confirmed regression: a new one at the end of the history, or a bisection that
found one (its first bad commit, or a change spread over several).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pruned_perf.core.atomic import PARENTS_HELP, check_output_file, check_writable_dir, write_json_atomic
from pruned_perf.core.errors import UserError

EXIT_OK, EXIT_REGRESSION = 0, 1


@dataclass(frozen=True)
class HistoryAddArgs:
    history: str
    results: str
    event: str
    repo: str


@dataclass(frozen=True)
class HistoryImportArgs:
    history: str
    baselines: str


@dataclass(frozen=True)
class HistoryCheckArgs:
    history: str
    format: str
    json: str | None
    raw: bool


@dataclass(frozen=True)
class BisectArgs:
    good: str
    bad: str
    points: list
    profile: str
    history: str | None
    repo: str
    out: str
    cache_dir: str
    pytest_args: list


@dataclass(frozen=True)
class SiteArgs:
    history: str
    out: str
    repo_url: str | None


def _fields(cls):
    return lambda ns: cls(**{name: getattr(ns, name) for name in cls.__dataclass_fields__})


def add_commands(sub) -> None:
    p = sub.add_parser("history", help="the long history of runs: add, import, show, check")
    hsub = p.add_subparsers(dest="history_command", metavar="{add,import,show,check}", required=True)
    add = hsub.add_parser("add", help="append a finished run's results to the history (one file per run)")
    add.add_argument("history", metavar="HISTORY", help="the history's directory")
    add.add_argument("results", metavar="RESULTS.json")
    add.add_argument("--event", default="manual", choices=("schedule", "push", "manual", "trial"),
                     help="what started the run (a workflow's event)")
    add.add_argument("--repo", default=".", help="the git checkout the run measured: its commit's subject and date")
    add.set_defaults(func=cmd_add, typed=_fields(HistoryAddArgs))
    imp = hsub.add_parser("import", help="add the runs a baseline store remembers (baselines/) to the history")
    imp.add_argument("history", metavar="HISTORY")
    imp.add_argument("baselines", metavar="BASELINES_DIR")
    imp.set_defaults(func=cmd_import, typed=_fields(HistoryImportArgs))
    show = hsub.add_parser("show", help="the runs of every hardware and profile")
    show.add_argument("history", metavar="HISTORY")
    show.add_argument("--format", choices=("github", "plain"), default="plain")
    show.set_defaults(func=cmd_show, typed=lambda ns: (ns.history, ns.format))
    check = hsub.add_parser("check", help="steps in every series, and where each stands; exit 1 on a new "
                            "confirmed regression")
    check.add_argument("history", metavar="HISTORY")
    check.add_argument("--format", choices=("github", "plain"), default="plain")
    check.add_argument("--json", metavar="FILE", help=f"also write the steps as JSON ({PARENTS_HELP})")
    check.add_argument("--raw", action="store_true", help="series of raw times, not divided by the probe")
    check.set_defaults(func=cmd_check, typed=_fields(HistoryCheckArgs))
    _add_bisect(sub)
    _add_site(sub)


def _add_bisect(sub) -> None:
    p = sub.add_parser("bisect", help="which commit between GOOD and BAD made the points slower: A/Bs on this "
                       "machine; exit 1 when a regression is confirmed",
                       epilog="More perf-suite options for every A/B go after --, e.g. -- --pp-device cuda")
    p.add_argument("good", metavar="GOOD")
    p.add_argument("bad", metavar="BAD")
    p.add_argument("--points", required=True, type=lambda t: [x for x in t.split(",") if x],
                   help="comma-separated point ids whose step to follow")
    p.add_argument("--profile", required=True, help="the profile the points are of")
    p.add_argument("--history", metavar="HISTORY", help="record the A/Bs and the conclusion in this history")
    p.add_argument("--repo", default=".", help="the git checkout whose commits to bisect (default .)")
    p.add_argument("--out", default="bisect-out", help=f"where each A/B's results go ({PARENTS_HELP})")
    p.add_argument("--cache-dir", default=".pp-cache", help="the plan cache every A/B shares")
    # after `--`: more perf-suite options for every A/B (--pp-device cuda, ...); pruned_perf.cli.main
    # takes them off before parsing
    p.set_defaults(func=cmd_bisect, typed=_fields(BisectArgs), pytest_args=[])


def _add_site(sub) -> None:
    p = sub.add_parser("site", help="the history as one static page (OUT/index.html) that opens from a file")
    p.add_argument("history", metavar="HISTORY")
    p.add_argument("--out", required=True, metavar="DIR", help=f"the page's directory ({PARENTS_HELP})")
    p.add_argument("--repo-url", help="https://github.com/OWNER/REPO: link commits and ranges there")
    p.set_defaults(func=cmd_site, typed=_fields(SiteArgs))


# ---------------------------------------------------------------- handlers


def _git_subject(repo: str, sha: str | None) -> tuple[str | None, str | None]:
    if not sha:
        return None, None
    try:
        done = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%s%n%aI", sha], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if done.returncode != 0 or "\n" not in done.stdout:
        return None, None
    subject, when = done.stdout.split("\n", 1)
    return subject, when.strip() or None


def cmd_add(args: HistoryAddArgs) -> int:
    from pruned_perf.analysis.history import add_run, history_run
    from pruned_perf.analysis.results import load_results

    check_writable_dir(args.history, "HISTORY")
    results = load_results(args.results)
    subject, when = _git_subject(args.repo, results.commit)
    path = add_run(args.history, history_run(results, args.event, subject, when))
    print(f"added {args.results} to the history: {path}")
    return EXIT_OK


def cmd_import(args: HistoryImportArgs) -> int:
    from pruned_perf.analysis.history_import import import_baselines

    check_writable_dir(args.history, "HISTORY")
    added = import_baselines(args.baselines, args.history)
    print(f"imported {len(added)} runs from {args.baselines} into {args.history}")
    return EXIT_OK


def cmd_show(history_and_format: tuple) -> int:
    from pruned_perf.analysis.history import groups, load_runs
    from pruned_perf.analysis.history_report import render_runs

    history, fmt = history_and_format
    for slug, profile in groups(history):
        print(render_runs(slug, profile, load_runs(history, slug, profile), fmt))
    return EXIT_OK


def cmd_check(args: HistoryCheckArgs) -> int:
    from pruned_perf.analysis.history import groups
    from pruned_perf.analysis.history_check import check_history
    from pruned_perf.analysis.history_report import check_json, render_check

    if args.json:
        check_output_file(args.json, "--json")
    checks = [check_history(args.history, slug, profile, normalize=not args.raw)
              for slug, profile in groups(args.history)]
    if not checks:
        raise UserError(f"history {args.history} holds no runs (add one: pruned-perf history add HISTORY RESULTS.json)")
    for check in checks:
        print(render_check(check, args.format))
    if args.json:
        write_json_atomic(args.json, {"groups": [check_json(c) for c in checks]})
    return EXIT_REGRESSION if any(c.has_new_regression for c in checks) else EXIT_OK


def cmd_bisect(args: BisectArgs) -> int:
    from pruned_perf.analysis.history_ab import CULPRIT, SPREAD, add_ab, add_bisection
    from pruned_perf.bench.bisect import BisectRun, resolve

    repo = Path(args.repo)
    check_writable_dir(args.out, "--out")
    if args.history:
        check_writable_dir(args.history, "--history")
    keep = (lambda ab: add_ab(args.history, ab)) if args.history else None  # each A/B kept as it ends
    run = BisectRun(repo, resolve(repo, args.good), resolve(repo, args.bad), args.profile, args.points,
                    Path(args.out), Path(args.cache_dir), list(args.pytest_args), keep=keep)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bisection = run.run()
    print(_conclusion(bisection))
    if args.history and run.abs:
        add_bisection(args.history, run.abs[0].env, bisection)
    return EXIT_REGRESSION if bisection.outcome in (CULPRIT, SPREAD) else EXIT_OK


def _conclusion(b) -> str:
    head = f"pruned-perf bisect {b.good[:12]}..{b.bad[:12]} ({', '.join(b.points)}): {b.outcome}"
    if b.culprit:
        head += (f"\nfirst bad commit: {b.culprit} {b.subject or ''} ({b.author_time or '?'})"
                 + (f", {b.ratio:.3f}x [{b.ci_low:.3f}, {b.ci_high:.3f}]" if b.ratio and b.ci_low and b.ci_high else ""))
    skipped = f"\nskipped (its A/B could not run, or placed it at neither level): {', '.join(c[:12] for c in b.skipped)}" \
        if b.skipped else ""
    return head + (f"\n{b.reason}" if b.reason else "") + skipped


def cmd_site(args: SiteArgs) -> int:
    from pruned_perf.analysis.site import render
    from pruned_perf.analysis.site_data import site_page

    check_writable_dir(args.out, "--out")
    path = render(site_page(args.history, args.repo_url), args.out)
    print(f"wrote {path}")
    return EXIT_OK
