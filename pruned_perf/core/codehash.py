"""Which of this package's files a piece of code depends on, found by reading their imports.

A cached plan (or perplexity) must not outlive the code that computed it. A hand-written list of
"the files that decide a plan" goes stale the day a method starts to use a new helper; the closure of
the imports does not. Torch-free: it reads source, it imports nothing.
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "pruned_perf"
ROOT = Path(__file__).resolve().parent.parent  # the package: this file lies in its core/


def module_file(name: str) -> Path | None:
    """The source file of module `name` of this package, or None (another package, or a name imported
    from a module rather than a module)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py") if parts else None,
                      ROOT.joinpath(*parts, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pruned_perf.pruning.methods import depth` imports a module; `from x import UserError` does not
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def dependency_files(*modules: str) -> list[Path]:
    """The files of `modules` and of every module of this package that they import, at any depth
    (imports inside functions included), sorted."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        path = module_file(todo.pop())
        if path is not None and path not in seen:
            seen.add(path)
            todo += _imported(path)
            folders = path.relative_to(ROOT).parts[:-1]  # importing a submodule runs its packages first
            todo += [".".join((PACKAGE, *folders[:i])) for i in range(len(folders) + 1)]
    return sorted(seen)


def code_digest(*modules: str) -> str:
    """A digest of the source of `modules` and everything of this package they import."""
    digest = hashlib.sha256()
    for path in dependency_files(*modules):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
