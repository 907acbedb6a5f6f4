"""Builds the native CPU recurrence (csrc/native_recurrence.cc) at `pip install`; everything else is in pyproject.toml.

The one C++ source is compiled three times, as `rnnjax._native_amx` (AVX-512 with AMX tiles for bfloat16 GEMMs),
`rnnjax._native_avx512` and `rnnjax._native_avx2`, and `rnnjax.native` loads the best one the CPU can run. Every
extension is optional: where a build fails (no compiler, no jaxlib headers, not x86-64) pip still installs rnnjax,
and `unroll` runs the XLA path, saying so in one logged line.
"""

import platform

from setuptools import Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

# The ISA flags per build; rnnjax.native.BUILDS names the /proc/cpuinfo flags each needs at run time.
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"]
ISAS = {
    "amx": [*AVX512, "-mavx512bf16", "-mamx-tile", "-mamx-bf16"],  # bfloat16 GEMMs on AMX tiles (Sapphire Rapids on)
    "avx512": AVX512,
    "avx2": ["-mavx2", "-mfma"],
}


class BuildNative(build_ext):
    """Adds jaxlib's XLA FFI headers (`jax.ffi.include_dir()`) to the include path when the build runs."""

    def finalize_options(self):
        super().finalize_options()
        self.parallel = self.parallel or 3  # the builds compile side by side

    def build_extensions(self):
        import jaxlib  # a build requirement (pyproject.toml); imported here, not at setup.py's import

        include = jaxlib.__path__[0] + "/include"
        for extension in self.extensions:
            extension.include_dirs.append(include)
        super().build_extensions()

    def get_export_symbols(self, extension):
        return []  # a library of FFI handlers loaded with ctypes, not a Python module: no PyInit_ symbol


x86 = platform.machine().lower() in ("x86_64", "amd64")
extensions = [
    Extension(
        f"rnnjax._native_{isa}",
        # One source file per build: the builds compile in parallel, and from one shared source path they would
        # write one object file, each build linking whichever compile finished last (a mislabelled library).
        sources=[f"csrc/native_{isa}.cc"],
        depends=["csrc/native_recurrence.cc"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden", "-Wno-attributes", *flags],
        optional=True,
    )
    for isa, flags in ISAS.items()
] if x86 else []

setup(ext_modules=extensions, cmdclass={"build_ext": BuildNative})
