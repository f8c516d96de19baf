"""Local files and folders written whole or not at all.

Work in progress sits beside its target as `.NAME.partial-PID` and is renamed into place only when complete. A
killed writer leaves its partial path behind; the next writer to the same target sweeps those whose process is gone
(never one that is still being written: its process is alive). A writer replacing a folder first moves the old one
aside to `.NAME.old-PID`; if it was killed before the new one took its place, the sweep moves the old one back, so
no kill point loses the last complete version. storage.py writes local files through here; the shard writer, the
shard cache and checkpoints use the same paths.
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


def old_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old-{os.getpid()}"


def sweep_stale(target: Path) -> list[str]:
    """Clean up after writers of `target` that no longer run: an `.old` path whose target is missing is moved
    back into place; other partial and `.old` paths are removed. Returns what was done, one line each."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-(\d+)$")
    done = []
    if not target.parent.is_dir():
        return done
    stale = [path for path in target.parent.iterdir() if (found := pattern.match(path.name))
             and int(found.group(2)) != os.getpid() and not writer_alive(int(found.group(2)))]
    for path in sorted(stale, key=lambda p: ".old-" not in p.name):  # restore before anything is removed
        if ".old-" in path.name and not target.exists():
            path.rename(target)
            done.append(f"restored {target} from {path.name}, where a killed run had moved it")
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        done.append(f"removed {path}, left by a run that was killed")
    return done


def copy_into_place(path: Path, target: Path) -> None:
    """A finished file copied to `target`: beside it first, then renamed."""
    tmp = partial_path(target)
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)


def write_into_place(target: Path, data: bytes) -> None:
    """Small data (a manifest, a record) written to `target`: beside it first, then renamed."""
    tmp = partial_path(target)
    tmp.write_bytes(data)
    os.replace(tmp, target)
