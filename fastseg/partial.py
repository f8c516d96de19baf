"""Work in progress beside its target: `.NAME.partial-PID`, renamed into place only when complete.

A killed writer leaves its partial path behind; the next writer to the same target sweeps those whose process is
gone (never one that is still being written: its process is alive).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def partial_path(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{os.getpid()}"


def writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(target: Path) -> list[Path]:
    """Remove the partial (and half-swapped `.old`) paths of `target` left by writers that no longer run."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-(\d+)$")
    swept = []
    if not target.parent.is_dir():
        return swept
    for path in target.parent.iterdir():
        found = pattern.match(path.name)
        if found and int(found.group(2)) != os.getpid() and not writer_alive(int(found.group(2))):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            swept.append(path)
    return swept
