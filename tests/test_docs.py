"""The API reference site (mkdocs.yml, docs/): every namespace has its page, every public name of it is one the
page renders, the pages read from the repository exist with their figures, and the Equinox example runs. No
build here: `mkdocs build --strict` runs in .ci/run."""

import importlib
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMESPACES = {"rnnjax": "api/rnnjax.md", "rnnjax.train": "api/train.md", "rnnjax.models": "api/models.md",
              "rnnjax.nnx": "api/nnx.md", "rnnjax.native": "api/native.md"}


def public_names(namespace: str) -> list[str]:
    module = importlib.import_module(namespace)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == namespace]


def load_hooks():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        return importlib.import_module("hooks")
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize("namespace, page", NAMESPACES.items())
def test_every_namespace_has_an_api_page_in_the_navigation(namespace, page):
    assert re.search(rf"^::: {re.escape(namespace)}$", (ROOT / "docs" / page).read_text(), re.M)
    assert f": {page}" in (ROOT / "mkdocs.yml").read_text()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_name_is_rendered_on_its_page(namespace):
    """mkdocstrings renders what griffe finds statically: each public name must resolve there (a name made at
    run time would silently vanish from the page), and a public submodule needs its own page."""
    griffe = pytest.importorskip("griffe")  # the docs extra
    package = griffe.load(namespace.split(".")[0], search_paths=[str(ROOT)], resolve_aliases=True,
                          resolve_external=False)
    module = package if namespace == package.path else package[namespace.split(".", 1)[1]]
    for name in public_names(namespace):
        assert name in module.members, f"{namespace}.{name} is public but not visible to griffe"
        member = module.members[name]
        target = member.final_target if member.is_alias else member
        if target.is_module:
            assert target.path in NAMESPACES, f"{target.path} is public and needs an API page"


def test_the_pages_read_from_the_repository_exist_with_their_figures():
    hooks = load_hooks()
    for page in hooks.PAGES:
        assert (ROOT / page).is_file(), page
    for page in hooks.PAGES:
        for link in re.findall(r"\]\(([^)#\s]+\.(?:png|svg|jpg))\)", (ROOT / page).read_text()):
            figure = (ROOT / page).parent / link
            assert figure.is_file(), f"{page} shows {link}, which does not exist"
            assert any(figure.is_relative_to(ROOT / folder) for folder in hooks.FIGURES), link


def test_the_equinox_example_runs():
    pytest.importorskip("equinox")  # not a dependency: the example is checked where Equinox is installed
    text = (ROOT / "docs" / "api" / "equinox.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "docs/api/equinox.md", "exec"), {"__name__": "docs_equinox_example"})  # asserts inside


def test_ci_builds_the_site_strictly_after_the_tests():
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    build = next(index for index, line in enumerate(commands) if line.startswith("mkdocs build --strict"))
    assert commands.index("python -m pytest") < build
    assert any("docs" in line and "pip install" in line for line in commands[:build])
