"""The layering ARCHITECTURE.md states, checked on the source: the core never imports the engine, the models,
the experiments or the benchmarks; the engine and the models never import experiments; and `import rnnjax` loads
none of the experiments' packages (matplotlib, statsmodels, vaderSentiment), torch, or flax (only
`rnnjax.nnx` needs it, imported explicitly)."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def imported_modules(path: pathlib.Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def offending(folder: str, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).glob("*.py")):
        if path.name in skip:
            continue
        for module in imported_modules(path):
            if module.split(".")[0] in ("experiments", "benchmarks") and module.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)} imports {module}")
            elif any(module == name or module.startswith(name + ".") for name in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


def test_the_core_imports_neither_the_engine_nor_the_models_nor_any_task():
    assert offending("rnnjax", ("rnnjax.train", "rnnjax.models", "experiments", "benchmarks"),
                     skip=("__init__.py",)) == []


def test_the_engine_and_the_models_import_no_task_and_not_each_other():
    assert offending("rnnjax/train", ("rnnjax.models", "experiments", "benchmarks")) == []
    assert offending("rnnjax/models", ("rnnjax.train", "experiments", "benchmarks")) == []


def test_importing_rnnjax_loads_no_experiment_package_and_no_torch():
    code = ("import sys, rnnjax, rnnjax.train, rnnjax.models; "
            "print(sorted(m for m in ('matplotlib', 'statsmodels', 'vaderSentiment', 'torch', 'experiments', 'flax') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests",
                            check=True)
    assert result.stdout.strip() == "[]"
