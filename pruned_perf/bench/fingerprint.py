"""Which hardware and software produced a result, and the file-safe slug that names the hardware."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

import torch
import transformers

from pruned_perf.core.errors import UserError, choice_error

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
GIB = 1 << 30


def pick_device(requested: str | None) -> torch.device:
    """"auto"/None: cuda if available, else cpu; "cpu", "cuda" and "cuda:N" as asked."""
    value = "auto" if requested is None else str(requested).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match is None:
        raise choice_error("device", requested, DEVICE_CHOICES)
    if not torch.cuda.is_available():
        raise UserError(f"device {requested!r} asked for, but CUDA is not available here; valid choices: auto, cpu")
    index = int(match.group(1)) if match.group(1) is not None else None
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise UserError(f"device {requested!r} does not exist; valid choices: auto, cpu, cuda, "
                        f"cuda:0 .. cuda:{count - 1}")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def fingerprint(device) -> dict:
    device = torch.device(device)
    if device.type == "cuda":
        name, memory_bytes = gpu_identity(device)
        driver = nvidia_driver_version()
        slug = gpu_slug(name, memory_bytes)
    else:
        name, memory_bytes, driver = cpu_name(), host_memory_bytes(), None
        slug = cpu_slug(name, cpu_cores())
    return {
        "device": device.type,
        "name": name,
        "memory_bytes": memory_bytes,
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "slug": slug,
    }


def gpu_identity(device: torch.device) -> tuple:
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return props.name, int(props.total_memory)


def nvidia_driver_version() -> str | None:
    """The driver version from nvidia-smi, or None when it is missing or fails: never an error."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    # one line per GPU; a machine has one driver
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[0].strip():
        return None
    return lines[0].strip()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    # the cores this process may run on, which is what its timings depend on
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def slugify(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", " ", text.lower())
    # dots stay (a MIG profile such as 1g.10gb) but never lead: ".." must not become a directory name
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.") or "unknown"


def gpu_slug(name: str, memory_bytes: int) -> str:
    # memory always, even where the name has it: a MIG slice or a cut-down SKU can share a name
    return f"{slugify(name)}-{round(memory_bytes / GIB)}gb"


def cpu_slug(name: str, cores: int) -> str:
    # clock and the word "CPU" add nothing once the model number is there
    name = re.sub(r"@.*$", "", name)
    name = re.sub(r"\bcpu\b", " ", name, flags=re.IGNORECASE)
    return f"cpu-{slugify(name)}-{cores}-cores"
