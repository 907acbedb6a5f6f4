#!/usr/bin/env bash
# The native extension's tests under AddressSanitizer and UndefinedBehaviorSanitizer (issue 18's correctness gate):
# builds csrc/native_recurrence.cc with both sanitizers (AVX-512 with AMX tiles if the CPU has them, else AVX-512,
# else AVX2: the build setup.py's loader would pick), loads that build in place of the installed one
# (RNNJAX_NATIVE_LIBRARY) and runs tests/test_native.py. Any out-of-bounds access, use-after-free or undefined
# behaviour aborts the run. Usage, from the repository root, in the project's
# environment: bash csrc/sanitize.sh   (about 5 minutes on 2 cores: 2 to build, 3 to test)
set -euo pipefail
cd "$(dirname "$0")/.."
build="$(mktemp -d)"
include="$(python -c 'import jax; print(jax.ffi.include_dir())')"
if grep -qw amx_bf16 /proc/cpuinfo && grep -qw avx512_bf16 /proc/cpuinfo; then
  isa=(-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mavx512bf16 -mamx-tile -mamx-bf16)
elif grep -qw avx512bw /proc/cpuinfo; then
  isa=(-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma)
else
  isa=(-mavx2 -mfma)
fi
g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -fPIC -shared -Wno-attributes -isystem "$include" "${isa[@]}" csrc/native_recurrence.cc -o "$build/native_asan.so"
# Python itself is not instrumented: the runtime goes first, leak checking is off (the interpreter keeps its
# allocations to exit), and the test file runs in this one process (no pytest-xdist workers: addopts cleared).
export LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export RNNJAX_NATIVE_LIBRARY="$build/native_asan.so"
python -m pytest tests/test_native.py -o addopts= -p no:cacheprovider -q -k "not built_library and not find_build"
echo "native extension: tests clean under AddressSanitizer + UBSan ($build/native_asan.so)"
