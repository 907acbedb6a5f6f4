"""Keep freed host memory in the process for reuse, so that XLA's per-call buffers on CPU stop page-faulting.

XLA on CPU allocates every call's temporaries and outputs with `malloc` and frees them when the call ends. glibc
serves blocks above its mmap threshold (128 KiB, raised on the fly to at most 32 MiB) with a fresh `mmap`, and
returns them to the kernel on `free`; blocks allocated by other threads come from per-thread arenas that cannot hold
more than 64 MiB. A training step's `[time, batch, 4H]` gate buffers are such blocks, so every call touches tens to
hundreds of MB of new pages and pays a page fault (and a zero fill) per 4 KiB. At (B, T, D, H) = (16, 400, 64, 128)
that is ~18 of a 44 ms LSTM training step (benchmarks/NOTES.md, approach 7).

`retain_freed_memory()` tells glibc (`mallopt`) to serve blocks up to `threshold_bytes` from the heap, to keep up
to twice that of freed memory instead of trimming it, and to use one arena, so that the next call reuses the same
pages: LSTM and GRU training steps 1.2-1.75x faster on CPU, the same effect as running under tcmalloc
(`LD_PRELOAD=libtcmalloc_minimal.so.4`) or with `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` /
`MALLOC_ARENA_MAX` in the environment. The cost: the process keeps its peak heap instead of shrinking after a
large step (it does not allocate more than it did), and threads share one arena (contention only for programs
that malloc heavily from many threads at once). It changes the whole process, which is why the library never
calls it on import: the experiments' command lines and the benchmark harness do, and a user's program can.
"""

from __future__ import annotations

import ctypes
import os

from rnnjax._checks import check_positive_int

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

DEFAULT_THRESHOLD_BYTES = 1 << 30


def glibc_version() -> str | None:
    """"2.36" when this process runs on glibc, else None (musl, macOS, Windows)."""
    try:
        name_version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not name_version or not name_version.startswith("glibc "):
        return None
    return name_version.split()[1]


def _mallopt():
    return ctypes.CDLL(None).mallopt


def retain_freed_memory(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES, *, single_arena: bool = True) -> bool:
    """Make glibc keep freed blocks of up to `threshold_bytes` for reuse (module docstring). Returns True when the
    settings were applied, False when the process does not run on glibc (nothing changes; use tcmalloc there).

    `threshold_bytes`: the largest block served from the heap instead of a fresh `mmap`; freed memory up to twice
    that stays in the process. `single_arena`: serve every thread from the main arena, which is the only one that
    can hold blocks above 64 MiB (XLA allocates from its worker threads).
    """
    threshold_bytes = check_positive_int("threshold_bytes", threshold_bytes)
    if threshold_bytes > 1 << 30:
        raise ValueError(f"threshold_bytes must be at most 2**30 (mallopt takes a C int), got {threshold_bytes}")
    if glibc_version() is None:
        return False
    mallopt = _mallopt()
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = [
        (M_MMAP_THRESHOLD, threshold_bytes),
        (M_TRIM_THRESHOLD, min(2 * threshold_bytes, 2**31 - 1)),  # a C int
        (M_TOP_PAD, min(threshold_bytes, 1 << 26)),  # grow the heap in steps of up to 64 MiB
    ]
    if single_arena:
        settings.append((M_ARENA_MAX, 1))
    for parameter, value in settings:
        if mallopt(parameter, value) != 1:
            raise OSError(f"mallopt({parameter}, {value}) was refused by glibc {glibc_version()}")
    return True
