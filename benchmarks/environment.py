"""What the benchmark ran on: devices, versions, thread counts, flags and CPU model, recorded with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time

import jax

THREADS_VARIABLE = "RNNJAX_BENCH_THREADS"  # overrides the thread count PyTorch is pinned to


def thread_count() -> int:
    """Threads for PyTorch: `$RNNJAX_BENCH_THREADS`, else `os.cpu_count()` (XLA's CPU backend uses one per core)."""
    value = os.environ.get(THREADS_VARIABLE)
    return int(value) if value else (os.cpu_count() or 1)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """The `model name` line of /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# ISA extensions that decide the GEMM rate (float32 vector width, bf16/int8 dot products, AMX tiles).
MATMUL_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_isa_flags(cpuinfo_path: str = "/proc/cpuinfo") -> list[str] | None:
    """Which of MATMUL_ISA_FLAGS the CPU reports (Linux /proc/cpuinfo `flags`), None where there is no cpuinfo. A
    CPU without avx512_bf16/amx_bf16 has no bfloat16 arithmetic: `--dtype bfloat16` then measures emulation."""
    try:
        with open(cpuinfo_path) as file:
            for line in file:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in MATMUL_ISA_FLAGS if flag in present]
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def collect(threads: int) -> dict:
    devices = jax.devices()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    torch_threads = None
    if "torch" in sys.modules:  # only report what the run configured; never import torch just for this
        torch_threads = sys.modules["torch"].get_num_threads()
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "devices": [str(device) for device in devices],
        "versions": {name: package_version(name) for name in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")},
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "cpu_model": cpu_model(),
        "cpu_isa_flags": cpu_isa_flags(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "threads": {
            "pinned": threads,
            "source": f"${THREADS_VARIABLE}" if os.environ.get(THREADS_VARIABLE) else "os.cpu_count()",
            "torch_intra_op": torch_threads,
            "jax": "XLA default (one per core)",
        },
        "load_average_at_start": load_average(),
    }
