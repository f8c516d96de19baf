"""Options declared once: a dataclass field that is also a command-line flag carries its default (the field's),
its help, how the flag parses it and what it belongs to, beside the field; its check stays in the class's
__post_init__. The commands make their flags from these fields (cli/configs.add_options) and the dataclass back from
the parsed flags by field name (`from_args`), so a declared option cannot be dropped on the way in; their settings
files take the same keys."""
from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields

import yaml

SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def option(default=MISSING, *, help: str, flag: str | None = None, default_factory=MISSING, mode: str | None = None,
           deciding: bool = False, **parse):
    """A field with its flag: `flag` (default --NAME-WITH-DASHES) and argparse's own arguments in `parse` (type,
    nargs, choices, action, metavar). `mode`: the augmentation the option belongs to (given with another, it would
    have no effect); `deciding`: a set's option that decides what a part writes (parts must agree on it)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"help": help, "flag": flag, "parse": parse, "mode": mode, "deciding": deciding})


def declared(cls) -> list[Field]:
    """`cls`'s fields declared with `option`, in their order."""
    return [f for f in fields(cls) if "flag" in f.metadata]


def flag(spec: Field) -> str:
    return spec.metadata["flag"] or "--" + spec.name.replace("_", "-")


def dest(spec: Field) -> str:
    """Where argparse puts the field's flag: the flag's name (--image-size: image_size), not always the field's."""
    return flag(spec).lstrip("-").replace("-", "_")


def from_args(cls, args: argparse.Namespace, **decided):
    """`cls` made from every declared option's parsed flag, by field name; `decided`: the fields a command sets
    itself (from the machine, say), over what was parsed."""
    return cls(**{**{spec.name: getattr(args, dest(spec)) for spec in declared(cls)}, **decided})


def parse_size(text: str | int) -> int:
    """Bytes from a size: 256MB is 256·10⁶ bytes, 256MiB 256·2²⁰ (a flag's type: argparse names the flag)."""
    if isinstance(text, int):
        return text
    number = str(text).strip().rstrip("bBiIkKmMgGtT")
    unit = str(text).strip()[len(number):].lower()
    try:
        return int(float(number) * SIZE_UNITS[unit])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB or 256MB)") from None


class _Dumper(yaml.SafeDumper):
    """One setting a line, a list on its line: `image_size: [512, 512]`."""


_Dumper.add_representer(list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value,
                                                                              flow_style=True))


def dump(values: dict) -> str:
    """Settings as the YAML that --config reads back."""
    return yaml.dump(values, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
