"""report, compare, plot, merge and baseline read JSON and write tables and figures: they must start
fast and run where torch is not installed (a CI job that only gates, a laptop reading a GPU's results)."""
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tests.synthetic_results import make_results, sweep, write
except ImportError:
    from synthetic_results import make_results, sweep, write

# Run in a fresh interpreter in which importing torch (or transformers, which needs it) fails.
BLOCKED = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
PACKAGE = Path(__file__).resolve().parents[1] / "pruned_perf"
# Every module of the analysis stage and of the torch-free core, found on disk (a new one is covered
# without a word), and the other modules the results commands use.
ANALYSIS_MODULES = sorted(f"{folder}.{p.stem}" for folder in ("analysis", "core")
                          for p in (PACKAGE / folder).glob("*.py"))
SHARED_MODULES = ("cli_results", "pruning.sizing")


def _run(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED + code], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_analysis_modules_import_without_torch(tmp_path):
    assert "analysis.compare" in ANALYSIS_MODULES and "analysis.__init__" in ANALYSIS_MODULES
    imports = "; ".join(f"import pruned_perf.{name}".removesuffix(".__init__")
                        for name in ANALYSIS_MODULES + list(SHARED_MODULES))
    done = _run(imports + "; print('ok')", tmp_path)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


@pytest.mark.parametrize("argv,expected_out", [
    (["report", "r.json", "--format", "plain"], "Largest batch that fit"),
    (["compare", "r.json", "--baseline", "r.json", "--format", "plain"], "no regression"),
    (["plot", "r.json", "--out", "fig.png"], "wrote fig.png"),
    (["merge", "r.json", "--out", "m.json"], "merged 1 files"),
    (["baseline", "update", "r.json", "--baselines-dir", "b"], "b/"),
    (["baseline", "show", "--baselines-dir", "b"], "nvidia-h200-140gb"),
])
def test_the_results_commands_run_without_torch(tmp_path, argv, expected_out):
    write(tmp_path / "r.json", make_results(sweep(batch_sizes=(1, 8))))
    if argv[:2] == ["baseline", "show"]:
        assert _run(f"from pruned_perf.cli import main; main({['baseline', 'update', 'r.json', '--baselines-dir', 'b']!r})",
                    tmp_path).returncode == 0
    done = _run(f"from pruned_perf.cli import main; sys.exit(main({argv!r}))", tmp_path)
    assert done.returncode == 0, done.stderr
    assert expected_out in done.stdout, done.stdout
