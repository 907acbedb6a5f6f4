"""The wheel ships what users' tools need besides the code: `rnnjax/py.typed` (PEP 561), so type checkers read
the package's annotations instead of treating it as untyped."""

import shutil
import subprocess
import sys
import zipfile

from test_readme import ROOT


def test_the_wheel_ships_py_typed(tmp_path):
    assert (ROOT / "rnnjax" / "py.typed").is_file()
    project = tmp_path / "project"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "rnnjax", project / "rnnjax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta; build_meta.build_wheel('dist')"],
                   cwd=project, check=True, capture_output=True, timeout=300)
    wheel, = (project / "dist").glob("rnnjax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rnnjax/py.typed" in names and "rnnjax/train/loop.py" in names
