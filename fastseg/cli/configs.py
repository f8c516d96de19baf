"""Settings files for every command: `--config FILE` reads YAML whose keys are the command's flags (batch_size or
batch-size for --batch-size, and the positionals by name), a flag given on the command line winning over the file;
`--print-config` prints the settings the command would run with as YAML and exits; `settings()` is that YAML's
content, which a run writes beside its outputs so that `--config` reruns it. Flags and positionals mix in any order
(argparse's intermixed parsing).

The file goes through the parser's own flags, types and choices, so a setting means the same written in a file or
typed; a key no flag has is an error naming the nearest one.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import MISSING
from pathlib import Path

import yaml

from ..errors import FastsegError
from ..settings import declared, dest, dump, flag

# dests that are about reading the command line itself, never a setting
NOT_SETTINGS = ("help", "config", "print_config")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="read settings from this YAML file (keys: the flags' names, e.g. batch_size: 8); a flag "
                             "given on the command line wins")
    parser.add_argument("--print-config", action="store_true", help="print the settings as YAML and exit")


def add_options(parser, cls, defaults: dict | None = None) -> None:
    """A flag for each of `cls`'s fields declared with settings.option (flag, help, parsing), each defaulting to its
    field's default, or to `defaults[name]` where a command decides later (e.g. None: by the machine);
    `settings.from_args` makes the dataclass back from them."""
    for found in declared(cls):
        default = (defaults or {}).get(found.name, found.default)
        made = default is MISSING  # by a factory (the machine's cores, say): the help says what it is
        if made:
            default = found.default_factory()
        parse = dict(found.metadata["parse"])
        shown = found.metadata["help"]
        switch = parse.get("action") is argparse.BooleanOptionalAction
        if not made and default is not None and default != [] and (default is not False or switch):
            shown += " (default: %(default)s)"
        parser.add_argument(flag(found), dest=dest(found), default=default, help=shown, **parse)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line over the --config file (if any) over the flags' defaults."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", type=Path)
    known, _ = first.parse_known_args(argv)
    if known.config is not None:
        apply_file(parser, known.config)
    return parser.parse_intermixed_args(argv)


def read(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | None:
    """A command's arguments (`parse`, from sys.argv when `argv` is None), or None once --print-config has printed
    them: the command then exits 0."""
    args = parse(parser, sys.argv[1:] if argv is None else list(argv))
    if not args.print_config:
        return args
    print(dump(settings(parser, args)), end="")
    return None


def settable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's settings by key (the flag's dest): every flag and positional but --help and --config."""
    return {action.dest: action for action in parser._actions if action.dest not in NOT_SETTINGS}


def apply_file(parser: argparse.ArgumentParser, path: Path) -> None:
    """Make the file's settings the parser's defaults, each converted and checked as the flag would be."""
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as err:
        raise FastsegError(f"--config {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise FastsegError(f"--config {path}: not YAML ({str(err).splitlines()[0]})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise FastsegError(f"--config {path}: a settings file is a mapping of key: value, not a "
                           f"{type(values).__name__}")
    actions = settable(parser)
    defaults = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            nearest = difflib.get_close_matches(dest, list(actions), n=1)
            hint = f"; did you mean {nearest[0]}?" if nearest else ""
            raise FastsegError(f"--config {path}: unknown key {key!r}{hint} (the keys are the flags' names)")
        defaults[dest] = _converted(actions[dest], value, path, key)
        actions[dest].required = False  # given by the file
    parser.set_defaults(**defaults)


def _converted(action: argparse.Action, value, path: Path, key):
    """A file's value as the flag would have parsed it: its type applied to text, its choices checked, a switch a
    boolean."""
    where = f"--config {path}: {key}"
    if action.nargs == 0:  # a switch: store_true, or --x/--no-x (which may also be left undecided: null)
        undecided = value is None and isinstance(action, argparse.BooleanOptionalAction)
        if not isinstance(value, bool) and not undecided:
            raise FastsegError(f"{where} is true or false, not {value!r}")
        return value
    # several values: nargs +, * or a count, or a repeatable flag (its default a list)
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(action.default, list)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not many and isinstance(value, list):
        raise FastsegError(f"{where} takes one value, not a list")
    if isinstance(action.nargs, int) and len(items) != action.nargs:
        raise FastsegError(f"{where} takes {action.nargs} values, not {len(items)}")
    converted = []
    for item in items:
        if action.type is not None and not isinstance(item, bool):
            try:
                item = action.type(str(item)) if isinstance(item, (str, int, float)) else item
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise FastsegError(f"{where}: {err}") from None
        if action.choices is not None and item not in action.choices:
            raise FastsegError(f"{where} is one of {', '.join(map(str, action.choices))}, not {item!r}")
        converted.append(item)
    return converted if many else converted[0]


def settings(parser: argparse.ArgumentParser, args: argparse.Namespace, leave_out: tuple[str, ...] = ()) -> dict:
    """The settings `args` holds, as YAML-ready values (paths as text, tuples as lists), in the flags' order."""
    found = {}
    for key in settable(parser):
        if key in leave_out or not hasattr(args, key):
            continue
        found[key] = _plain(getattr(args, key))
    return found


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
