"""The command line every experiment shares: one `--field value` flag per field of its frozen config dataclass
(`--flag/--no-flag` for booleans), an optional preset, unknown flags rejected."""

from __future__ import annotations

import argparse
import dataclasses


def command_name(config_type) -> str:
    """What a user types to run the experiment that owns `config_type`: `python -m experiments.<task>`."""
    return "python -m " + config_type.__module__.removesuffix(".train")


def parse_config_flags(config_type, argv, description: str, presets: dict | None = None,
                       quick: dict | None = None):
    """`config_type(**(preset | flags given))`. `presets` adds `--preset NAME`; `quick` adds a `--quick` switch
    that selects that preset. Flags not given keep the preset's value, else the dataclass default."""
    parser = argparse.ArgumentParser(prog=command_name(config_type), description=description, allow_abbrev=False)
    if presets is not None:
        parser.add_argument("--preset", choices=sorted(presets), default=None)
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (the test suite's smoke run)")
    for field in dataclasses.fields(config_type):
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(field.default), default=None)
    args = vars(parser.parse_args(argv))
    preset = {}
    if presets is not None and args.get("preset"):
        preset = presets[args["preset"]]
    args.pop("preset", None)
    if quick is not None and args.pop("quick"):
        preset = quick
    return config_type(**(preset | {k: v for k, v in args.items() if v is not None}))
