"""What machine a measurement ran on: CPU model and the instruction sets that change OpenVINO's kernels, memory,
versions. Benchmarks print it, since numbers from another CPU kind are not comparable."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

#: Instruction sets that change which kernels OpenVINO runs (and whether bf16 or int8 pay off)
KERNEL_FLAGS = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8"}


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))


def physical_memory() -> int:
    """This machine's memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


#: a container's memory limit: cgroup v2, then v1 ("max", or a number near 2^63, where there is none)
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def usable_memory() -> int:
    """The memory this process may use: the machine's, or its container's limit where that is lower (a machine's
    64 GB say nothing of a container's 4); 0 where the system says neither."""
    limits = [physical_memory()]
    for path in CGROUP_MEMORY_LIMITS:
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if text.isdecimal() and len(text) < 20:
            limits.append(int(text))
    return min((limit for limit in limits if limit > 0), default=0)


def machine() -> dict:
    """The facts a reader needs to compare these numbers with theirs."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    ram = physical_memory()
    versions = {}
    for package in ("graphsurgery", "numpy", "onnx", "onnxruntime", "openvino", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    flags = sorted(cpu_flags() & KERNEL_FLAGS)
    return {"cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "ram_gib": round(ram / 2**30, 1), "os": platform.platform(), "python": platform.python_version(),
            "versions": versions}
