"""Griffe extension: a docstring's doctest blocks render as Python code on the API pages.

The library's docstrings hold their examples as bare doctest blocks (run by `pytest --doctest-modules`), not in a
Google-style `Examples:` section; as Markdown those would be one paragraph, and output such as `[[3.0]]` would read
as a reference link. Each block (the `>>>` lines, their `...` continuations and the expected output, up to a blank
line) is fenced as `pycon`, at its own indentation.
"""

from __future__ import annotations

import re

import griffe

_PROMPT = re.compile(r"^(\s*)>>> ")
_EXAMPLES = re.compile(r"^(\s*)Examples?:\s*$")


def fence_doctests(text: str) -> str:
    lines, out, index = text.splitlines(), [], 0
    while index < len(lines):
        match = _PROMPT.match(lines[index])
        if not match or _in_examples_section(lines, index, match.group(1)):
            out.append(lines[index])
            index += 1
            continue
        indent, block = match.group(1), []
        while index < len(lines) and lines[index].strip():
            block.append(lines[index])
            index += 1
        out += ["", f"{indent}```pycon", *block, f"{indent}```", ""]
    return "\n".join(out)


def _in_examples_section(lines: list[str], index: int, indent: str) -> bool:
    """An indented block under "Example:" is a Google-style section, which griffe renders as code already."""
    previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
    header = _EXAMPLES.match(previous)
    return bool(header) and len(indent) > len(header.group(1))


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
