import json
import re
import subprocess
from types import SimpleNamespace

import pytest
import torch

from pruned_perf.bench import fingerprint as fp
from pruned_perf.core.errors import UserError

FILE_SAFE = re.compile(r"[a-z0-9][a-z0-9.-]*")
KEYS = {"device", "name", "memory_bytes", "driver", "cuda", "torch", "transformers", "threads", "slug"}


def test_cpu_fingerprint_keys_slug_file_safe_and_stable():
    first = fp.fingerprint("cpu")
    assert set(first) == KEYS
    assert first["device"] == "cpu" and first["driver"] is None
    assert FILE_SAFE.fullmatch(first["slug"]) and first["slug"].startswith("cpu-")
    assert first["slug"].endswith(f"-{fp.cpu_cores()}-cores")
    assert first["memory_bytes"] > 0
    assert first == fp.fingerprint(torch.device("cpu"))
    json.dumps(first)  # goes into machine_info as it is


def test_cpu_slug_drops_marks_clock_and_the_word_cpu():
    name = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert fp.cpu_slug(name, 2) == "cpu-intel-xeon-platinum-8375c-2-cores"
    assert fp.cpu_slug("AMD EPYC 7R13 Processor", 96) == "cpu-amd-epyc-7r13-processor-96-cores"


@pytest.mark.parametrize("name", ["../../etc", "NVIDIA  H100/80GB (TM)", ".hidden", "Ünïcode GPU™", ""])
def test_slugify_is_file_safe_for_any_name(name):
    slug = fp.gpu_slug(name, 80 * fp.GIB)
    assert FILE_SAFE.fullmatch(slug), slug
    assert "/" not in slug and ".." not in slug.split("-")


def test_gpu_slug_names_device_and_memory():
    assert fp.gpu_slug("NVIDIA H200", 150754820096) == "nvidia-h200-140gb"
    assert fp.gpu_slug("NVIDIA H100 80GB HBM3", 85045231616) == "nvidia-h100-80gb-hbm3-79gb"
    assert fp.gpu_slug("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 42 * fp.GIB) == "nvidia-h100-80gb-hbm3-mig-3g.40gb-42gb"


def test_cuda_fingerprint_through_a_fake_gpu(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H200", total_memory=150754820096)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(fp, "nvidia_driver_version", lambda: "570.124.06")
    result = fp.fingerprint("cuda")
    assert result["device"] == "cuda" and result["name"] == "NVIDIA H200"
    assert result["memory_bytes"] == 150754820096 and result["driver"] == "570.124.06"
    assert result["slug"] == "nvidia-h200-140gb"


def test_driver_version_never_crashes(monkeypatch):
    monkeypatch.setattr(fp.shutil, "which", lambda name: None)
    assert fp.nvidia_driver_version() is None
    monkeypatch.setattr(fp.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def failing(*args, **kwargs):
        raise subprocess.CalledProcessError(9, args[0], "", "NVIDIA-SMI has failed")

    monkeypatch.setattr(fp.subprocess, "run", failing)
    assert fp.nvidia_driver_version() is None

    def hanging(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 10)

    monkeypatch.setattr(fp.subprocess, "run", hanging)
    assert fp.nvidia_driver_version() is None
    monkeypatch.setattr(fp.subprocess, "run",
                        lambda *a, **k: SimpleNamespace(stdout="570.124.06\n570.124.06\n"))
    assert fp.nvidia_driver_version() == "570.124.06"


# --- pick_device ----------------------------------------------------------------------------------

@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("requested", [None, "auto", "AUTO", "cpu", " cpu "])
def test_pick_device_cpu_without_cuda(no_cuda, requested):
    assert fp.pick_device(requested) == torch.device("cpu")


@pytest.mark.parametrize("requested", ["cuda", "cuda:1"])
def test_pick_device_cuda_unavailable_is_a_user_error(no_cuda, requested):
    with pytest.raises(UserError, match=rf"'{requested}'.*not available.*auto, cpu"):
        fp.pick_device(requested)


@pytest.mark.parametrize("requested", ["tpu", "cuda:x", "gpu", "cuda:"])
def test_pick_device_unknown_names_value_and_choices(requested):
    with pytest.raises(UserError, match=rf"'{requested}'.*auto, cpu, cuda, cuda:N"):
        fp.pick_device(requested)


def test_pick_device_with_gpus(two_gpus):
    assert fp.pick_device("auto") == torch.device("cuda")
    assert fp.pick_device("cuda") == torch.device("cuda")
    assert fp.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"'cuda:2'.*cuda:0 \.\. cuda:1"):
        fp.pick_device("cuda:2")
