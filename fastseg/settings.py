"""Options declared once: a dataclass field that is also a command-line flag carries its default (the field's),
its help and how the flag parses it, beside the field; its check stays in the class's __post_init__. The commands
make their flags from these fields (cli/configs.add_options), and their settings files take the same keys."""
from __future__ import annotations

from dataclasses import MISSING, field


def option(default=MISSING, *, help: str, flag: str | None = None, default_factory=MISSING, **parse):
    """A field with its flag: `flag` (default --NAME-WITH-DASHES) and argparse's own arguments in `parse` (type,
    nargs, choices, action, metavar)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"help": help, "flag": flag, "parse": parse})
