"""`retain_freed_memory`: argument checks, the mallopt calls it makes, and its effect on page faults (counted, not
timed), measured in a subprocess so that the rest of the suite keeps the default allocator."""

import subprocess
import sys
import textwrap

import pytest

from rnnjax.train import host_memory

needs_glibc = pytest.mark.skipif(host_memory.glibc_version() is None, reason="mallopt is glibc's")

# Allocates, touches and frees a 48 MiB block five times with the C allocator; prints the minor page faults of the
# last four rounds. Without retained memory every round maps fresh pages: ~4 x 12288 faults.
FAULTS = textwrap.dedent("""
    import ctypes, resource, sys
    from rnnjax.train.host_memory import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 48 << 20
    def round_trip():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        round_trip()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode):
    result = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


@needs_glibc
def test_retained_memory_is_reused_without_page_faults():
    default, retained = _faults("default"), _faults("retain")
    assert default > 4 * 12288 * 0.9  # the premise: glibc maps (and faults in) a fresh block every round
    assert retained < 0.05 * default


@needs_glibc
def test_sets_thresholds_and_arena(monkeypatch):
    calls = []

    def mallopt(parameter, value):
        calls.append((parameter, value))
        return 1

    monkeypatch.setattr(host_memory, "_mallopt", lambda: mallopt)
    assert host_memory.retain_freed_memory(1 << 28) is True
    assert calls == [(host_memory.M_MMAP_THRESHOLD, 1 << 28), (host_memory.M_TRIM_THRESHOLD, 1 << 29),
                     (host_memory.M_TOP_PAD, 1 << 26), (host_memory.M_ARENA_MAX, 1)]
    calls.clear()
    host_memory.retain_freed_memory(1 << 30, single_arena=False)
    assert calls == [(host_memory.M_MMAP_THRESHOLD, 1 << 30), (host_memory.M_TRIM_THRESHOLD, 2**31 - 1),
                     (host_memory.M_TOP_PAD, 1 << 26)]


@needs_glibc
def test_refused_setting_is_an_error(monkeypatch):
    monkeypatch.setattr(host_memory, "_mallopt", lambda: lambda parameter, value: 0)
    with pytest.raises(OSError, match="mallopt"):
        host_memory.retain_freed_memory()


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(host_memory.os, "confstr", lambda name: None)
    monkeypatch.setattr(host_memory, "_mallopt", lambda: pytest.fail("mallopt called without glibc"))
    assert host_memory.glibc_version() is None
    assert host_memory.retain_freed_memory() is False


@pytest.mark.parametrize("threshold, error", [(0, ValueError), (-1, ValueError), ((1 << 30) + 1, ValueError),
                                              (1.5e9, TypeError), (True, TypeError)])
def test_bad_threshold(threshold, error):
    with pytest.raises(error, match="threshold_bytes"):
        host_memory.retain_freed_memory(threshold)

