"""Every output path gets the same handling (pruned_perf/core/atomic.py).

A path that is a directory (for a file output) or a file (for a directory output), that lies below a
file, that is not a regular file, or where no file can be created: one `error:` line naming it, exit 2
(a usage error, exit 4, in pytest), before any work, and nothing written. A missing parent directory is
created. Unwritable places that stop root too: /proc and /sys (no file can be created in either), and a
read-only tmpfs mounted in a private mount namespace where `unshare` may do that.
"""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pruned_perf.core import atomic
from pruned_perf.analysis.results import load_results
from pruned_perf.cli import main

try:
    from tests.synthetic_results import make_results, sweep, write
except ImportError:
    from synthetic_results import make_results, sweep, write

REPO = Path(__file__).resolve().parents[1]
USAGE_ERROR = 4  # pytest's exit code for a usage error
SUITE = ("--pp-device", "cpu", "--pp-models", "tiny-llama", "--pp-methods", "dense", "--pp-batch", "1",
         "--pp-out", "2", "--pp-rounds", "1", "--pp-min-round-s", "0")
# Directories no file can be created in, whoever runs the tests.
UNWRITABLE = [d for d in ("/proc", "/sys") if os.path.isdir(d)]

# command -> argv with OUT where the output goes and IN where its input goes: by default a file that does
# not exist, so that an error about the output shows that the output was checked before anything was read
FILE_OUTPUTS = {
    "report": ["report", "IN", "--out", "OUT"],
    "plot": ["plot", "IN", "--out", "OUT"],
    "compare": ["compare", "IN", "--baseline", "IN", "--json", "OUT"],
    "merge": ["merge", "IN", "-o", "OUT"],
}
DIR_OUTPUTS = {
    "baseline-update": ["baseline", "update", "IN", "--baselines-dir", "OUT"],
    "prune": ["prune", "--model", "tiny-llama", "--method", "depth", "--criterion", "magnitude", "--ratio", "0.3",
              "--out", "OUT"],
}
SUFFIX = {"plot": ".png"}


def _argv(template, out, results: Path | None = None) -> list[str]:
    given = {"OUT": out, "IN": results or "/nonexistent/results.json"}
    return [str(given.get(a, a)) for a in template]


def tree(root: Path) -> dict:
    """Every entry under root: a file's bytes, "dir" for a directory, "other" for anything else (a FIFO)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else "dir" if p.is_dir() else "other"
            for p in root.rglob("*")}


def one_error(capsys, path, printed: bool = False) -> str:
    """The one error line, which names `path`; stdout empty unless the command had `printed` before."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), captured.err
    assert repr(str(path)) in lines[0], lines[0]
    assert printed or captured.out == ""
    return lines[0]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """tmp_path with a directory holding a file, a plain file, and nothing else; the cwd, so that
    nothing a command might write by default goes elsewhere."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep.txt").write_text("kept")
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_model(monkeypatch):
    """prune must fail before it builds a model."""
    import pruned_perf.llama.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the output path was checked")
    monkeypatch.setattr(pruned_perf.llama.models, "build_model", refuse)


def _file_cases(place: Path, name: str) -> list[tuple[Path, str]]:
    suffix = SUFFIX.get(name, ".json")
    (place / f"dir{suffix}").mkdir()  # a directory named as the output would be
    (place / f"dir{suffix}" / "keep.txt").write_text("kept")
    cases = [(place / f"dir{suffix}", "it is a directory"),
             (place / "afile" / f"out{suffix}", f"{str(place / 'afile')!r} is a file, not a directory"),
             (place / "afile" / "deeper" / f"out{suffix}", f"{str(place / 'afile')!r} is a file")]
    cases += [(Path(d) / f"pp-test-out{suffix}", f"cannot create files in {d!r}") for d in UNWRITABLE]
    cases += [(Path(d) / "pp-test" / f"out{suffix}", f"cannot create files in {d!r}") for d in UNWRITABLE]
    os.mkfifo(place / f"fifo{suffix}")  # renaming onto it would replace the FIFO, not write into it
    cases.append((place / f"fifo{suffix}", "not a regular file"))
    return cases


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_a_file_output_that_cannot_be_written_is_one_error_before_any_work(place, capsys, name):
    for out, reason in _file_cases(place, name):
        before = tree(place)
        assert main(_argv(FILE_OUTPUTS[name], out)) == 2, out
        assert reason in one_error(capsys, out)
        assert tree(place) == before  # no file, no temporary file, no directory
        assert not out.exists() or out.is_dir() or out.name.startswith("fifo")


@pytest.mark.parametrize("name", DIR_OUTPUTS)
def test_a_directory_output_that_cannot_be_written_is_one_error_before_any_work(place, capsys, no_model, name):
    cases = [(place / "afile", "it is a file, not a directory"),
             (place / "afile" / "sub", f"{str(place / 'afile')!r} is a file, not a directory")]
    cases += [(Path(d) / "pp-test" / "out", f"cannot create files in {d!r}") for d in UNWRITABLE]
    for out, reason in cases:
        before = tree(place)
        assert main(_argv(DIR_OUTPUTS[name], out)) == 2, out
        assert reason in one_error(capsys, out)
        assert tree(place) == before
        assert not os.path.lexists(out) or out == place / "afile"


@pytest.fixture
def results(place) -> Path:
    return write(place / "results.json", make_results(sweep(batch_sizes=(1, 8))))


@pytest.mark.parametrize("name", [*FILE_OUTPUTS, "baseline-update"])
def test_a_missing_parent_directory_is_created(place, results, capsys, name):
    template = {**FILE_OUTPUTS, **DIR_OUTPUTS}[name]
    out = place / "new" / "deeper" / ("store" if name == "baseline-update" else f"out{SUFFIX.get(name, '.json')}")
    assert main(_argv(template, out, results)) == 0, capsys.readouterr().err
    written = [p for p in (place / "new").rglob("*") if p.is_file()]
    assert len(written) == 1 and written[0].stat().st_size > 0
    assert written[0] == out or out in written[0].parents


def test_prune_creates_a_missing_parent_directory(place, capsys):
    out = place / "new" / "deeper" / "m"
    assert main(_argv(DIR_OUTPUTS["prune"], out)) == 0, capsys.readouterr().err
    assert (out / "plan.json").is_file()


@pytest.mark.parametrize("name", ["report", "plot", "merge", "compare", "baseline-update"])
def test_a_write_that_fails_late_is_one_error_and_leaves_nothing(place, results, capsys, monkeypatch, name):
    """A failure after the check (here a full disk at the rename): the same error, no temporary file, and
    the parent directories made for the file are removed again."""
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", full)
    template = {**FILE_OUTPUTS, **DIR_OUTPUTS}[name]
    out = place / "new" / "deeper" / ("store" if name == "baseline-update" else f"out{SUFFIX.get(name, '.json')}")
    before = tree(place)
    assert main(_argv(template, out, results)) == 2
    if name == "baseline-update":  # the file that failed is the one in the store
        stored = load_results(results)
        out = out / stored.slug / f"{stored.profile}.json"
    line = one_error(capsys, out, printed=name == "compare")  # compare prints its table first
    assert line.endswith(os.strerror(errno.ENOSPC))
    assert tree(place) == before


def test_an_existing_file_is_replaced_whole(place, results, capsys):
    out = place / "adir" / "keep.txt"
    assert main(["report", str(results), "--format", "plain", "--out", str(out)]) == 0
    text = out.read_text()
    assert text != "kept" and main(["report", str(results), "--format", "plain"]) == 0
    assert capsys.readouterr().out.endswith(text)  # what the command prints without --out
    assert os.listdir(place / "adir") == ["keep.txt"]  # no temporary file left beside it


# ---------------------------------------------------------------- the helper itself


def test_the_check_names_the_option_and_leaves_nothing(tmp_path):
    before = tree(tmp_path)
    assert atomic.check_output_file(tmp_path / "a" / "b" / "c.json", "--out") == tmp_path / "a" / "b" / "c.json"
    assert atomic.check_writable_dir(tmp_path / "store", "--baselines-dir") == tmp_path / "store"
    assert tree(tmp_path) == before  # the probe file is gone, no directory was made
    with pytest.raises(atomic.UserError, match=r"^cannot write --out '.*': it is a directory"):
        atomic.check_output_file(tmp_path, "--out")


def test_an_existing_log_is_appended_to_and_a_directory_is_not(tmp_path):
    log = tmp_path / "points.jsonl"
    log.write_text("{}\n")
    assert atomic.check_append_file(log, "--pp-log") == log
    assert log.read_text() == "{}\n"
    with pytest.raises(atomic.UserError, match="it is a directory"):
        atomic.check_append_file(tmp_path, "--pp-log")
    with pytest.raises(atomic.UserError, match="is a file, not a directory"):
        atomic.check_append_file(log / "x.jsonl", "--pp-log")


# ---------------------------------------------------------------- the perf suite: --benchmark-json, --pp-log


def _pytest(cwd: Path, *args, wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The suite started as tests/test_perf_suite.py starts it (its PP_* settings cleared, one thread)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PP_") and k != "PYTEST_ADDOPTS"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "pytest", str(REPO / "perf"), "-p", "no:cacheprovider", "-q", *SUITE,
               *map(str, args)]
    return subprocess.run([*wrap, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _one_usage_error(run: subprocess.CompletedProcess, option: str, path, reason: str) -> None:
    assert run.returncode == USAGE_ERROR, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: pruned_perf: cannot write {option} "), run.stderr
    assert repr(str(path)) in errors[0] and reason in errors[0], errors[0]
    assert "passed" not in run.stdout  # nothing was measured


@pytest.mark.parametrize("option", ["--benchmark-json", "--pp-log"])
def test_the_suite_refuses_an_output_it_cannot_write_before_measuring(place, option):
    cases = [(place / "adir", "it is a directory"),
             (place / "afile" / "r.json", f"{str(place / 'afile')!r} is a file, not a directory")]
    cases += [(Path(d) / "pp-test" / "r.json", f"cannot create files in {d!r}") for d in UNWRITABLE]
    for out, reason in cases:
        before = tree(place)
        _one_usage_error(_pytest(place, option, out), option, out, reason)
        assert tree(place) == before  # no results, no log, no plan cache


def test_the_suite_refuses_an_unwritable_plan_cache(place):
    out = place / "afile" / "cache"
    before = tree(place)
    _one_usage_error(_pytest(place, "--pp-cache-dir", out), "--pp-cache-dir", out, "is a file, not a directory")
    assert tree(place) == before


def _read_only_mount(place: Path) -> tuple[str, ...] | None:
    """A prefix that runs a command with `place`/ro a read-only tmpfs, in a private mount namespace (so
    nothing outlives it), or None where this system does not allow that."""
    if shutil.which("unshare") is None:
        return None
    (place / "ro").mkdir()
    prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c",
              'mount -t tmpfs -o ro none "$0" && exec "$@"', str(place / "ro"))
    probe = subprocess.run([*prefix, "touch", "ro/x"], cwd=place, capture_output=True, text=True)
    return prefix if "Read-only file system" in probe.stderr else None


def test_the_suite_and_the_cli_refuse_a_read_only_file_system(place):
    wrap = _read_only_mount(place)
    if wrap is None:
        pytest.skip("cannot mount a read-only tmpfs here (needs unshare and mount privileges)")
    out = place / "ro" / "r.json"
    _one_usage_error(_pytest(place, "--benchmark-json", out, wrap=wrap), "--benchmark-json", out,
                     "Read-only file system")
    results = write(place / "results.json", make_results(sweep(batch_sizes=(1,))))
    cli = [sys.executable, "-m", "pruned_perf.cli"]
    for argv in (["report", results, "--out", out], ["merge", results, "-o", out],
                 ["baseline", "update", results, "--baselines-dir", place / "ro" / "store"]):
        run = subprocess.run([*wrap, *cli, *map(str, argv)], cwd=place, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: cannot write "), run.stderr
        assert "Read-only file system" in run.stderr


@pytest.mark.slow  # measures one point
def test_the_suite_creates_the_missing_parent_of_its_results(place):
    out = place / "new" / "deeper" / "r.json"
    run = _pytest(place, "--benchmark-json", out)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json", "r.jsonl"]  # results and point log
