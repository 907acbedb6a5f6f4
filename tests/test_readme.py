"""The README's quickstart runs as written, and its test command is the one CI runs."""

import pathlib
import re

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_quickstart_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    grads = namespace["grads"]
    assert type(grads).__name__ == "LSTMParams"
    assert grads.weight_hh.shape == (128, 32)
    assert all(bool(jax.numpy.all(jax.numpy.isfinite(leaf))) for leaf in jax.tree.leaves(grads))


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_command = re.search(r"^(python -m pytest)\s+# tests", readme, flags=re.MULTILINE).group(1)
    ci_commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert ci_commands[-1] == test_command
