"""The native CPU recurrence: the whole time loop of a `SimpleRNN`, `LSTM` or `GRU` layer, forward and backward, in
C++ through `jax.ffi` (csrc/native_recurrence.cc, built at `pip install`), which `unroll` takes on CPU where it can
("native" in `unroll_path`). This module says whether it can, and switches it, as `torch.backends.mkldnn` does:

    >>> import rnnjax
    >>> rnnjax.native.is_available() in (True, False)
    True
    >>> with rnnjax.native.flags(enabled=False):
    ...     rnnjax.native.is_enabled()
    False

The extension is built three times, for AVX-512 with AMX (Sapphire Rapids and later: bfloat16 GEMM operands run
on the tile matrix unit, `uses_amx()`), for AVX-512 (16 float lanes) and for AVX2 with FMA (8 lanes), and the best
library the CPU can run is loaded on first use (`isa()` says which). Without any (another architecture, a failed
build, `RNNJAX_NATIVE=0` in the environment) `unroll` runs the XLA paths and one line is logged, never an error.
`RNNJAX_NATIVE_LIBRARY=/path/to/lib.so` loads another build instead (csrc/sanitize.sh runs the tests on an
AddressSanitizer/UBSan build that way). The
same Python API on GPU and TPU keeps using XLA (or the GPU kernels of `rnnjax._gpu`).

What it computes is exactly `rnnjax._fused`'s recurrence (the same equations, packed-sequence masking, reverse,
float32 with float32 or bfloat16 GEMM operands); the tests hold the two to float32 rounding
(tests/test_native.py). The work of a step is cut by hidden units across XLA's intra-op thread pool, and each unit
is computed the same way whichever thread runs it, so results do not depend on the thread count
(`RNNJAX_NATIVE_THREADS` caps it).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import pathlib
import platform

import jax

logger = logging.getLogger("rnnjax")

__all__ = ["AMX_TARGETS", "BUILDS", "TARGETS", "find_build", "flags", "is_available", "is_enabled", "isa",
           "set_enabled", "unavailable_reason", "uses_amx"]

# FFI target name -> the symbol the library exports (csrc/native_recurrence.cc).
TARGETS = {
    "rnnjax_lstm_forward": "RnnjaxLstmForward",
    "rnnjax_lstm_backward": "RnnjaxLstmBackward",
    "rnnjax_gru_forward": "RnnjaxGruForward",
    "rnnjax_gru_backward": "RnnjaxGruBackward",
    "rnnjax_rnn_forward": "RnnjaxRnnForward",
    "rnnjax_rnn_backward": "RnnjaxRnnBackward",
    "rnnjax_elementwise": "RnnjaxElementwise",
    "rnnjax_weight_gradient_f32": "RnnjaxWeightGradientF32",
}
# Targets only the AMX build exports: dW = dgates^T inputs on AMX tiles, for bfloat16 GEMM operands.
AMX_TARGETS = {"rnnjax_weight_gradient": "RnnjaxWeightGradient"}
# The builds, best first, with the /proc/cpuinfo flags each needs (setup.py compiles them with these ISAs).
_AVX512 = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"})
BUILDS = (
    ("amx", _AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16"}),
    ("avx512", _AVX512),
    ("avx2", frozenset({"avx2", "fma"})),
)

_enabled = os.environ.get("RNNJAX_NATIVE", "1") != "0"


def _cpu_flags() -> frozenset[str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def find_build(directory: pathlib.Path, cpu_flags: frozenset[str]) -> tuple[pathlib.Path | None, str]:
    """(the library in `directory` this CPU can run, its ISA), best first, or (None, why there is none)."""
    built = False
    for isa, needs in BUILDS:
        paths = sorted(directory.glob(f"_native_{isa}*.so"))
        built = built or bool(paths)
        if paths and needs <= cpu_flags:
            return paths[0], isa
    if not built:
        return None, f"the extension was not built (no _native_*.so in {directory}; see setup.py)"
    return None, "this CPU has neither AVX-512 nor AVX2 with FMA"


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library, its ISA), or (None, why not). Registers the FFI targets once per process."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"no native build for {platform.machine()} (x86-64 only)"
    override = os.environ.get("RNNJAX_NATIVE_LIBRARY")  # a library built elsewhere (csrc/sanitize.sh's ASan build)
    if override:
        path, isa = pathlib.Path(override), "custom"
    else:
        path, isa = find_build(pathlib.Path(__file__).parent, _cpu_flags())
    if path is None:
        return None, isa
    try:
        library = ctypes.CDLL(str(path))
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
        for target, symbol in AMX_TARGETS.items():
            if hasattr(library, symbol):
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    except (OSError, AttributeError) as error:
        return None, f"{path.name} did not load: {error}"
    return library, isa


@functools.cache
def _log_fallback(reason: str) -> None:
    logger.warning("rnnjax: the native CPU recurrence is unavailable (%s); unroll runs the XLA path", reason)


def is_available() -> bool:
    """True when the extension is built and loads on this CPU (whether or not it is enabled)."""
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    """Why `is_available()` is False (None when it is True)."""
    library, reason = _load()
    return None if library is not None else reason


def isa() -> str | None:
    """"amx", "avx512" or "avx2": the build that was loaded ("custom" for `RNNJAX_NATIVE_LIBRARY`; None when none
    was)."""
    library, name = _load()
    return name if library is not None else None


def uses_amx() -> bool:
    """True when bfloat16 GEMM operands (`matmul_dtype="bfloat16"`) run on the CPU's AMX tiles: the "amx" build is
    loaded, Linux granted the tile state, and `RNNJAX_NATIVE_AMX` is not "0" (read per call, so that benchmarks can
    compare the two kernels in one process). Otherwise bf16 operands run on the AVX-512/AVX2 FMA kernels."""
    library = _load()[0]
    return library is not None and hasattr(library, "RnnjaxNativeUsesAmx") and bool(library.RnnjaxNativeUsesAmx())


def is_enabled() -> bool:
    """True when `unroll` may take the native path: enabled (`set_enabled`, `flags`, `RNNJAX_NATIVE`) and
    available. Logs the reason once when enabled but unavailable."""
    if not _enabled:
        return False
    library, reason = _load()
    if library is None:
        _log_fallback(reason)
    return library is not None


def set_enabled(enabled: bool) -> None:
    """Allow (True, the default unless `RNNJAX_NATIVE=0`) or forbid the native path for calls traced from now on;
    a function already jitted keeps the path it was traced with."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def flags(enabled: bool):
    """`set_enabled(enabled)` inside a `with` block, restored after it (`torch.backends.cudnn.flags`)."""
    global _enabled
    previous = _enabled
    _enabled = bool(enabled)
    try:
        yield
    finally:
        _enabled = previous
