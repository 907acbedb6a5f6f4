"""The README's examples run as written, every public name its tables list imports (and every public name is
listed), and its test command is the one CI runs."""

import pathlib
import re

import jax

import rnnjax

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACES = {"rnnjax": rnnjax, "rnnjax.train": rnnjax.train, "rnnjax.models": rnnjax.models}


def python_blocks():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def table_names() -> set[str]:
    """The identifiers in the first column of the README's tables (`LSTM(hidden_size, ...)` gives `LSTM`)."""
    names = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            first_column = re.split(r"(?<!\\)\|", line)[1]
            names |= {match.group(1) for match in re.finditer(r"`([A-Za-z_]\w*)", first_column)}
    return names


def test_readme_quickstart_runs_as_written():
    blocks = python_blocks()
    assert len(blocks) == 3
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    grads = namespace["grads"]
    assert type(grads).__name__ == "LSTMParams"
    assert grads.weight_hh.shape == (128, 32)
    assert all(bool(jax.numpy.all(jax.numpy.isfinite(leaf))) for leaf in jax.tree.leaves(grads))


def test_readme_flax_nnx_example_runs_as_written():
    namespace = {}
    exec(compile(python_blocks()[1], "README.md", "exec"), namespace)
    assert bool(jax.numpy.isfinite(namespace["loss"]))
    assert type(namespace["model"].lstm.weight_hh).__name__ == "Param"


def test_readme_manual_training_loop_runs_as_written():
    namespace = {}
    exec(compile(python_blocks()[2], "README.md", "exec"), namespace)
    state, metrics = namespace["state"], namespace["metrics"]
    assert int(state.step) == 200 and float(metrics["loss"]) < 1e-2  # the linear model fits its three points


def test_every_name_in_the_readme_tables_is_public_and_every_public_name_is_listed():
    listed = table_names()
    public = {name: module for module, namespace in NAMESPACES.items() for name in namespace.__all__
              if name not in ("train", "models")}
    missing = sorted(name for name in listed if name not in public)
    assert not missing, f"README lists names no namespace exports: {missing}"
    unlisted = sorted(f"{module}.{name}" for name, module in public.items() if name not in listed)
    assert not unlisted, f"public names the README's tables do not list: {unlisted}"
    for name, module in public.items():
        assert getattr(NAMESPACES[module], name) is not None


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_command = re.search(r"^(python -m pytest)\s+# tests", readme, flags=re.MULTILINE).group(1)
    ci_commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert test_command in ci_commands  # as it stands: no flags, no paths (the docs build follows it)
