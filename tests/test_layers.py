"""The import rule: every module imports only from its own layer or the layers below it.

Read off the source (every import statement, at the top or inside a function), not off sys.modules, so a
lazy import that only some command reaches is held to the rule too.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pruned_perf"

# layer: (rank, its modules by dotted prefix under pruned_perf, packages it must never import).
# A module may import from its own layer and from layers of a lower rank. Layers of one rank (pruning and
# analysis) are siblings: neither imports the other.
LAYERS = {
    "core": (0, ("core", "__init__"), ("torch", "transformers")),
    "llama": (1, ("llama", "surgery"), ()),
    "pruning": (2, ("pruning",), ()),
    "analysis": (2, ("analysis",), ("torch", "transformers")),
    "bench": (3, ("bench",), ()),
    "cli": (4, ("cli", "cli_results", "cli_history"), ()),
}


def module_names() -> list[str]:
    """Every module of the package, dotted under pruned_perf ("pruning.methods.flap", "pruning.__init__")."""
    return sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py"))


def layer_of(module: str) -> str | None:
    for layer, (_, prefixes, _) in LAYERS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return None


def _is_module(dotted: str) -> bool:
    path = PACKAGE.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(module: str) -> list[tuple[int, str]]:
    """(line, imported name) for every import in `module`: a pruned_perf module as "pruned_perf.x.y",
    anything else by its top-level package."""
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = module.split(".")[:-node.level]
                base = ".".join(["pruned_perf", *package, *filter(None, [base])])
            # `from pruned_perf.x import y` imports module x.y where y is one, else a name of x
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub.removeprefix("pruned_perf.")) else base))
    return found


def violations(module: str) -> list[str]:
    own = layer_of(module)
    rank, _, banned = LAYERS[own]
    problems = []
    for line, name in imports(module):
        if name.split(".")[0] in banned:
            problems.append(f"pruned_perf/{module.replace('.', '/')}.py:{line} imports {name} "
                            f"(layer {own} must never import {', '.join(banned)})")
        if not name.startswith("pruned_perf."):
            continue
        target = name.removeprefix("pruned_perf.")
        other = layer_of(target)
        if other != own and LAYERS[other][0] >= rank:
            problems.append(f"pruned_perf/{module.replace('.', '/')}.py:{line} imports {name}: layer {own} "
                            f"(rank {rank}) may not import layer {other} (rank {LAYERS[other][0]})")
    return problems


def test_every_module_has_a_layer():
    unplaced = [m for m in module_names() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS in tests/test_layers.py): {unplaced}"


@pytest.mark.parametrize("module", module_names())
def test_a_module_imports_only_its_own_layer_and_the_layers_below(module):
    problems = violations(module)
    assert not problems, "\n".join(problems)


def test_the_rule_catches_top_level_function_level_and_relative_imports(tmp_path, monkeypatch):
    # a stand-in package: the checks above mean something only if these are caught
    fake = tmp_path / "pruned_perf"
    for sub in ("analysis", "pruning", "bench"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "core").mkdir()
    (fake / "core" / "formatting.py").write_text("import json\nfrom pruned_perf.pruning import sizing\n")
    (fake / "analysis" / "report.py").write_text("def f():\n    import torch.nn\n    from ..pruning.sizing import x\n")
    (fake / "pruning" / "sizing.py").write_text("from pruned_perf.analysis import report\n")
    (fake / "bench" / "measure.py").write_text("from pruned_perf.pruning.sizing import x\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert violations("core.formatting") == [
        "pruned_perf/core/formatting.py:2 imports pruned_perf.pruning.sizing: layer core (rank 0) may not import "
        "layer pruning (rank 2)"]
    report = violations("analysis.report")
    assert "pruned_perf/analysis/report.py:2 imports torch.nn (layer analysis must never import torch, " \
           "transformers)" in report
    assert any(":3 imports pruned_perf.pruning.sizing: layer analysis" in p for p in report), report
    assert violations("pruning.sizing") == [
        "pruned_perf/pruning/sizing.py:1 imports pruned_perf.analysis.report: layer pruning (rank 2) may not "
        "import layer analysis (rank 2)"]
    assert violations("bench.measure") == []
