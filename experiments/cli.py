"""The command line every experiment shares: one `--field value` flag per field of its frozen config dataclass
(`--flag/--no-flag` for booleans), an optional preset, unknown flags rejected, and the whole config validated
before the experiment touches data or disk. `--help` shows each field's `# comment` from the dataclass source,
its default and choices, the presets and the subcommands.

Every experiment that trains through `rnnjax.train.fit` also takes the `RunFlags` (`--resume`, `--overwrite`,
`--tensorboard`, `--csv`): `run_main` parses them, refuses a run directory that holds a previous run unless
`--resume` or `--overwrite` is given (before any data loads), and `fit` applies them to every `rnnjax.train.fit`
call of the experiment. `run_main` is the experiments' whole `main`: subcommands, parsing, the host-memory
setting, the config printed as a table (`print_table`; JSON stays in the run directory's files), the run.

Every rejection is one line on stderr naming the flag the user typed, then exit status 2 (argparse's convention),
with no traceback: `python -m experiments.language_modeling: error: --hidden-size must be >= 1, got 0`. A
validation error (a `ValueError` from the config's own checks or the experiment's `validate`) names the config's
fields (`hidden_size`); `flag_message` rewrites each field name into its flag (`--hidden-size`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import contextvars
import dataclasses
import inspect
import json
import os
import pathlib
import re
import sys
import textwrap
from typing import Callable

import jax

import rnnjax.train
from experiments import datafiles
from rnnjax.train.run_files import PreviousRunError, previous_run


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


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The flags of every experiment that trains through `rnnjax.train.fit`, besides its config's own fields
    (a config that has a `resume` field keeps it; these are never stored in the config)."""

    resume: bool = False  # continue the run in run_dir from its newest checkpoint
    overwrite: bool = False  # delete a previous run in run_dir (metrics, checkpoints, plots) and start over
    tensorboard: bool = False  # also write TensorBoard event files to run_dir/tensorboard (needs tensorboardX)
    csv: bool = False  # also write run_dir/metrics.csv (train) and metrics.valid.csv


_RUN_FLAGS: contextvars.ContextVar[RunFlags] = contextvars.ContextVar("run_flags", default=RunFlags())


def field_comments(config_type) -> dict[str, str]:
    """`{field: comment}` from the `# comment` after each field in the dataclass source (its bases' too), read
    with `ast`; a field without one is left out."""
    comments = {}
    for cls in reversed(config_type.__mro__[:-1]):  # a subclass's comment wins over its base's
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        body = getattr(ast.parse(source).body[0], "body", [])
        for node, after in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                tail = lines[node.end_lineno - 1][node.end_col_offset:]
                if "#" not in tail:
                    continue
                text = [tail.split("#", 1)[1].strip()]
                # comment-only lines right below continue it (up to a blank line or the next statement)
                for line in lines[node.end_lineno:(after.lineno - 1 if after is not None else len(lines))]:
                    if not line.strip().startswith("#"):
                        break
                    text.append(line.strip().lstrip("#").strip())
                comments[node.target.id] = " ".join(text)
    return comments


def preset_comments(config_type, presets: dict) -> dict[str, str]:
    """`{preset: first sentence of the # comment block right above its entry}` in the `presets` dict literal of
    `config_type`'s module (found by its keys); presets without a comment are left out."""
    try:
        source = inspect.getsource(sys.modules[config_type.__module__])
    except (OSError, TypeError, KeyError):
        return {}
    lines, comments = source.splitlines(), {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        keys = [key.value for key in node.keys if isinstance(key, ast.Constant)]
        if set(keys) != set(presets):
            continue
        for key in node.keys:
            block, row = [], key.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                block.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            if block:
                text = " ".join(block)
                comments[key.value] = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;")
    return comments


def _settings(preset: dict, defaults: dict, limit: int = 100) -> str:
    """A preset's settings that differ from the defaults, strings (dataset, corpus) first, cut to `limit`."""
    changed = [(key, value) for key, value in preset.items() if defaults.get(key, object()) != value]
    changed.sort(key=lambda item: not isinstance(item[1], str))
    text = ", ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in changed)
    if not text:
        return "the defaults"
    return text if len(text) <= limit else text[:limit - 3].rsplit(", ", 1)[0] + ", ..."


def _help_epilog(config_type, presets: dict | None, quick: dict | None, subcommands: dict | None) -> str:
    sections = []
    defaults = {field.name: field.default for field in dataclasses.fields(config_type)}
    if presets:
        width, comments = max(map(len, presets)), preset_comments(config_type, presets)
        sections.append("presets (--preset NAME; flags given override them):\n" + "\n".join(
            f"  {name:<{width}}  {comments[name] + ': ' if name in comments else ''}"
            f"{_settings(values, defaults, max(40, 100 - len(comments.get(name, ''))))}"
            for name, values in sorted(presets.items())))
    if quick:
        sections.append("--quick (tiny sizes and steps):\n  " + _settings(quick, defaults, limit=200))
    if subcommands:
        width = max(map(len, subcommands))
        sections.append("subcommands (their own --help):\n" + "\n".join(
            f"  {name:<{width}}  {text}" for name, text in subcommands.items()))
    return "\n\n".join(sections)


def _field_help(comment: str, default, choices) -> str:
    parts = [comment] if comment else []
    if choices:
        parts.append("choices: " + ", ".join(map(str, choices)))
    parts.append(f"default: {default!r}" if isinstance(default, str) else f"default: {default}")
    return "; ".join(parts).replace("%", "%%")  # argparse formats help with %


def parse_config_flags(config_type, argv, description: str, presets: dict | None = None,
                       quick: dict | None = None, validate: Callable | None = None, exit_on_error: bool = False,
                       choices: dict | None = None, subcommands: dict | None = None,
                       run_flags: bool | tuple[str, ...] = False):
    """`config_type(**(preset | flags given))`, then `validate(config)` when given. `presets` adds
    `--preset NAME`; `quick` adds a `--quick` switch that selects that preset. Flags not given keep the preset's
    value, else the dataclass default. `choices` (`{field: allowed values}`) and `subcommands` (`{name:
    one-line description}`) are shown in `--help`; `run_flags` accepts (and documents) the `RunFlags`, which
    `run_main` reads (they are not part of the config): True for all of them, or a tuple of their names
    (`("overwrite",)` for an experiment with its own loop, which cannot resume).

    argparse's own rejections (an unknown flag, a value of the wrong type) exit with status 2 after one line on
    stderr. With `exit_on_error` (what every experiment should pass), so does a ValueError from the dataclass or
    `validate`, its field names rewritten into flags (module docstring); without it, that ValueError propagates
    (the behaviour of experiments not yet converted)."""
    parser = OneLineParser(prog=command_name(config_type), description=description, allow_abbrev=False,
                           epilog=_help_epilog(config_type, presets, quick, subcommands),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets is not None:
        parser.add_argument("--preset", choices=sorted(presets), default=None, metavar="NAME",
                            help="start from a preset (listed below): " + ", ".join(sorted(presets)))
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (the test suite's smoke run)")
    fields = dataclasses.fields(config_type)
    comments, choices = field_comments(config_type), choices or {}
    for field in fields:
        text = _field_help(comments.get(field.name, ""), field.default, choices.get(field.name))
        if isinstance(field.default, bool):
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag(field.name), type=type(field.default), default=None, help=text)
    names = tuple(field.name for field in dataclasses.fields(RunFlags)) if run_flags is True else run_flags or ()
    extra = _add_run_flags(parser, config_type, names) if names else ()
    args = vars(parser.parse_args(argv))
    for name in extra:
        args.pop(name)
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


def _add_run_flags(parser: argparse.ArgumentParser, config_type, names: tuple[str, ...]) -> tuple[str, ...]:
    """Adds the `RunFlags` named in `names` that the config does not have as fields; returns their names."""
    own = {field.name for field in dataclasses.fields(config_type)}
    comments, added = field_comments(RunFlags), []
    group = parser.add_argument_group("run directory and metric files")
    for field in dataclasses.fields(RunFlags):
        if field.name in names and field.name not in own:
            group.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=None,
                               help=_field_help(comments[field.name], field.default, None))
            added.append(field.name)
    return tuple(added)


def parse_run_flags(config, argv) -> RunFlags:
    """The `RunFlags` in `argv` (the flags `parse_config_flags(..., run_flags=True)` accepted); a config's own
    `resume` field counts as `--resume`."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for field in dataclasses.fields(RunFlags):
        parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=False)
    flags = RunFlags(**vars(parser.parse_known_args(argv)[0]))
    if getattr(config, "resume", False):
        flags = dataclasses.replace(flags, resume=True)
    return flags


def check_previous_run(run_dir: str, flags: RunFlags, resumable: bool = True) -> None:
    """Raises a ValueError (naming `--run-dir`, `--resume` and `--overwrite`) when `run_dir`, or a run
    subdirectory of it (experiments with one run per seed or cell), holds a previous run and neither flag was
    given: `fit` would refuse it too, but only after the data has loaded. `resumable=False` (an experiment with
    its own loop) offers `--overwrite` alone."""
    if flags.resume and flags.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the previous run or replace it")
    if flags.resume or flags.overwrite:
        return
    path = pathlib.Path(run_dir)
    candidates = [path] + (sorted(child for child in path.iterdir() if child.is_dir()) if path.is_dir() else [])
    for candidate in candidates:
        found = previous_run(candidate)
        if found:
            raise ValueError(f"{'--run-dir ' + repr(run_dir) if candidate == path else repr(str(candidate))} "
                             f"holds a previous run ({', '.join(found)}); pass "
                             + ("--resume to continue it, --overwrite to delete it and start over"
                                if resumable else "--overwrite to replace its files")
                             + ", or another --run-dir")


@contextlib.contextmanager
def using_run_flags(flags: RunFlags):
    """`fit` below applies `flags` inside the block."""
    token = _RUN_FLAGS.set(flags)
    try:
        yield flags
    finally:
        _RUN_FLAGS.reset(token)


def fit(trainer: rnnjax.train.TrainerConfig, *args, resume: bool = False, **kwargs):
    """`rnnjax.train.fit` with the command line's `RunFlags` applied (`run_main` sets them; the defaults
    outside it): `--tensorboard` and `--csv` switch the trainer's writers on, `--resume` resumes (as does
    `resume=True`), `--overwrite` replaces a previous run."""
    flags = _RUN_FLAGS.get()
    trainer = dataclasses.replace(trainer, tensorboard=trainer.tensorboard or flags.tensorboard,
                                  csv=trainer.csv or flags.csv)
    return rnnjax.train.fit(trainer, *args, resume=resume or flags.resume, overwrite=flags.overwrite, **kwargs)


def _flat(mapping: dict, prefix: str = "") -> dict:
    rows = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.update(_flat(value, name + "."))
        else:
            rows[name] = value
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 8 else f"{value:.6g}"  # 1.0 stays 1.0; 0.1555351 is 0.155535
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str) if len(json.dumps(value, default=str)) <= 100 else (
            f"[{len(value)} values]")
    return str(value)


def format_table(rows: dict, title: str | None = None) -> str:
    """`rows` as two aligned columns, nested dicts flattened into dotted names (`test.model.mse`), floats to 6
    significant digits, long lists shortened to their length (the files keep them whole)."""
    flat = {name: _cell(value) for name, value in _flat(rows).items()}
    if not flat:
        return title or ""
    width = max(map(len, flat))
    lines = [f"{name:<{width}}  {value}" for name, value in flat.items()]
    if title:
        lines.insert(0, f"== {title} ==")
    return "\n".join(lines)


def print_table(rows: dict, title: str | None = None, print_fn: Callable = print) -> None:
    """Prints `format_table(rows, title)`."""
    print_fn(format_table(rows, title))


def run_main(argv, parse_config: Callable, train: Callable, *, subcommands: dict | None = None,
             trains: bool = True):
    """An experiment's `main`: `argv` (None: `sys.argv[1:]`) starting with a name in `subcommands` (`{name:
    function(argv)}`) runs it. Otherwise: `config = parse_config(argv)`; with `trains` (experiments that call
    `fit` below) the `RunFlags`, and a previous run in `run_dir` without `--resume`/`--overwrite` is one line on
    stderr and exit status 2 before any data loads (as is fit's own `PreviousRunError`, should it come later);
    without `trains` (an experiment with its own loop, whose `parse_config` accepts `run_flags=("overwrite",)`)
    the same refusal, lifted by `--overwrite` alone;
    then freed host memory is retained (`rnnjax.train.retain_freed_memory`), the config is printed as a table,
    and `train(config)` runs with the flags applied. Returns what `train` returns."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if subcommands and argv and argv[0] in subcommands:
        return subcommands[argv[0]](argv[1:])
    config = parse_config(argv)
    prog = command_name(type(config))
    flags = parse_run_flags(config, argv)
    if not trains:
        flags = RunFlags(overwrite=flags.overwrite)
    try:
        check_previous_run(config.run_dir, flags, resumable=trains)
    except ValueError as error:
        _exit_one_line(prog, str(error))
    rnnjax.train.retain_freed_memory()  # reuse XLA's per-call host buffers: no page faults per step
    print_table({**dataclasses.asdict(config), "jax": jax.__version__,
                 "devices": ", ".join(str(device) for device in jax.devices())}, title="config")
    with using_run_flags(flags):
        try:
            return train(config)
        except PreviousRunError as error:
            message = str(error).replace("overwrite=True", "--overwrite").replace("resume=True", "--resume")
            _exit_one_line(prog, message.replace("run_dir", "--run-dir"))


def use_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache in the shared cache directory (`datafiles.cache_dir()/jax`),
    for every program: experiments that build a new jitted step per seed or fold compile the same program again,
    and the cache returns the identical executable (results unchanged) instead of recompiling."""
    jax.config.update("jax_compilation_cache_dir", str(datafiles.cache_dir() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _exit_one_line(prog: str, message: str):
    sys.stderr.write(f"{prog}: error: {' '.join(message.split())}\n")
    raise SystemExit(2)
