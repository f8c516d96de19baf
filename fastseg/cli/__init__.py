"""One small file per command; each turns FastsegError into one line on stderr and a non-zero exit."""
from __future__ import annotations

import sys
from collections.abc import Callable

from ..errors import FastsegError


def run_cli(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except FastsegError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
