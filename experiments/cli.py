"""The command line every experiment shares: one `--field value` flag per field of its frozen config dataclass
(`--flag/--no-flag` for booleans), an optional preset, unknown flags rejected, and the whole config validated
before the experiment touches data or disk.

Every rejection is one line on stderr naming the flag the user typed, then exit status 2 (argparse's convention),
with no traceback: `python -m experiments.language_modeling: error: --hidden-size must be >= 1, got 0`. A
validation error (a `ValueError` from the config's own checks or the experiment's `validate`) names the config's
fields (`hidden_size`); `flag_message` rewrites each field name into its flag (`--hidden-size`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import sys
from typing import Callable


def command_name(config_type) -> str:
    """What a user types to run the experiment that owns `config_type`: `python -m experiments.<task>`."""
    module = config_type.__module__
    if module == "__main__":  # a single-file study run as `python -m experiments.quickstart`
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else pathlib.Path(sys.argv[0]).stem
    return "python -m " + module.removesuffix(".train")


def flag(field_name: str) -> str:
    """The flag of a config field: `hidden_size` -> `--hidden-size`."""
    return "--" + field_name.replace("_", "-")


def flag_message(message: str, field_names) -> str:
    """`message` with every whole-word config field name replaced by its flag (longest names first, so
    `max_grad_norm` never becomes `max_--grad-norm`)."""
    for name in sorted(field_names, key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flag(name), message)
    return message


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, `PROG: error: MESSAGE`, then exit status 2 (the
    usage block argparse prints first is left out: `--help` shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def check_run_dir(run_dir: str) -> None:
    """Raises a ValueError naming `run_dir` unless it is a directory or can be created as one: non-empty, not an
    existing file, and its nearest existing ancestor a writable directory."""
    if not str(run_dir):
        raise ValueError("run_dir must be a non-empty path, got ''")
    path = pathlib.Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"run_dir {str(path)!r} exists and is not a directory")
    ancestor = path if path.exists() else next(parent for parent in path.absolute().parents if parent.exists())
    if not ancestor.is_dir():
        raise ValueError(f"run_dir {str(path)!r} cannot be created: {str(ancestor)!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"run_dir {str(path)!r} is not writable ({str(ancestor)!r} is read-only for this user)")


def check_directory(name: str, value: str) -> None:
    """Raises a ValueError unless `value` is empty (not given) or an existing directory."""
    if value and not pathlib.Path(value).is_dir():
        raise ValueError(f"{name} {value!r} is not a directory" + (
            "" if pathlib.Path(value).exists() else " (it does not exist)"))


def check_file(name: str, value: str) -> None:
    """Raises a ValueError unless `value` is empty (not given) or an existing file."""
    if value and not pathlib.Path(value).is_file():
        raise ValueError(f"{name} {value!r} is not a file" + (
            "" if pathlib.Path(value).exists() else " (it does not exist)"))


def parse_config_flags(config_type, argv, description: str, presets: dict | None = None,
                       quick: dict | None = None, validate: Callable | None = None, exit_on_error: bool = False):
    """`config_type(**(preset | flags given))`, then `validate(config)` when given. `presets` adds
    `--preset NAME`; `quick` adds a `--quick` switch that selects that preset. Flags not given keep the preset's
    value, else the dataclass default.

    argparse's own rejections (an unknown flag, a value of the wrong type) exit with status 2 after one line on
    stderr. With `exit_on_error` (what every experiment should pass), so does a ValueError from the dataclass or
    `validate`, its field names rewritten into flags (module docstring); without it, that ValueError propagates
    (the behaviour of experiments not yet converted)."""
    parser = OneLineParser(prog=command_name(config_type), description=description, allow_abbrev=False)
    if presets is not None:
        parser.add_argument("--preset", choices=sorted(presets), default=None)
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (the test suite's smoke run)")
    fields = dataclasses.fields(config_type)
    for field in fields:
        if isinstance(field.default, bool):
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag(field.name), type=type(field.default), default=None)
    args = vars(parser.parse_args(argv))
    preset = {}
    if presets is not None and args.get("preset"):
        preset = presets[args["preset"]]
    args.pop("preset", None)
    if quick is not None and args.pop("quick"):
        preset = quick
    try:
        config = config_type(**(preset | {k: v for k, v in args.items() if v is not None}))
        if validate is not None:
            validate(config)
    except ValueError as error:
        if not exit_on_error:
            raise
        # The user typed flags, not field names: name the flag. One line, whatever the message held.
        parser.error(" ".join(flag_message(str(error), [field.name for field in fields]).split()))
    return config
