"""Where each side of an A/B runs (`Side`): the head is the source tree pruned_perf is imported from, on
this interpreter; the base is a git revision of that repository, checked out with `git worktree add
--detach` under the cache directory (the user's checkout and index are never touched), or another
Python interpreter on the head's tree (to compare torch or transformers versions).

A worktree is removed when its A/B ends; one left by an A/B that was killed outright (its driver's pid in
its name is gone) is removed by the next.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from pruned_perf.core.ab_schema import BASE, HEAD
from pruned_perf.core.errors import UserError


class ABError(UserError):
    """The A/B cannot start: a base that cannot be resolved, imported or started."""


@dataclass(frozen=True)
class Side:
    """Where one side's worker runs: its interpreter and its source tree (first on PYTHONPATH)."""

    role: str
    spec: str  # what the user asked for: the revision or interpreter; "working tree" for the head
    python: str
    tree: Path
    worktree: Path | None = None  # the git worktree this A/B added for it, removed at the end


def head_tree() -> Path:
    """The directory pruned_perf is imported from here: the head's source."""
    import pruned_perf

    return Path(pruned_perf.__file__).resolve().parent.parent


def head_side() -> Side:
    return Side(HEAD, "working tree", sys.executable, head_tree())


def _git(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)


def resolve_base(spec: str, tree: Path, cache_dir: Path) -> Side:
    """The base side for `--pp-ab spec`: an existing file is an interpreter (it must run Python), anything
    else a git revision of the repository `tree` lies in (checked out into a new worktree under
    cache_dir/ab)."""
    if os.path.isfile(spec):
        _check_interpreter(spec)
        return Side(BASE, spec, os.path.abspath(spec), tree)
    top = _git(tree, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ABError(f"--pp-ab {spec} is no Python interpreter (no such file), and pruned_perf is imported "
                      f"from {tree}, which is not a git checkout, so it cannot be a revision either")
    root = Path(top.stdout.strip())
    sha = _git(root, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if sha.returncode != 0:
        raise ABError(f"--pp-ab {spec} is neither a git revision of {root} nor a Python interpreter "
                      "(no such file)")
    worktree = add_worktree(root, sha.stdout.strip(), cache_dir.resolve() / "ab", f"--pp-ab {spec}")
    return Side(BASE, spec, sys.executable, worktree / tree.relative_to(root), worktree)


def add_worktree(root: Path, sha: str, parent: Path, what: str) -> Path:
    """A detached worktree of `sha` under `parent`, named with this process's pid, so that a later run can
    tell one whose process is gone (remove_stale_worktrees); the user's checkout and index untouched."""
    remove_stale_worktrees(parent)
    worktree = parent / f"{sha[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    worktree.parent.mkdir(parents=True, exist_ok=True)
    added = _git(root, "worktree", "add", "--detach", "--quiet", str(worktree), sha)
    if added.returncode != 0:
        raise ABError(f"{what}: git worktree add {worktree} failed: {added.stderr.strip()}")
    return worktree


def _check_interpreter(spec: str) -> None:
    """A file given as the base must be a Python interpreter that runs: one line naming what it is not."""
    if not os.access(spec, os.X_OK):
        raise ABError(f"--pp-ab {spec}: the interpreter is not executable")
    try:
        done = subprocess.run([spec, "-c", "import sys; print(sys.version_info[0])"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ABError(f"--pp-ab {spec} is no Python interpreter: {exc}") from None
    if done.returncode != 0 or done.stdout.strip() != "3":
        raise ABError(f"--pp-ab {spec} is no Python 3 interpreter (it exited with status {done.returncode}"
                      f"{': ' + done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''})")


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


def remove_stale_worktrees(parent: Path) -> None:
    """Remove the worktrees whose process no longer runs (killed outright: no `close`)."""
    if not parent.is_dir():
        return
    for worktree in parent.iterdir():
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
