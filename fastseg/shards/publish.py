"""A finished set into its place, so that no interrupted run leaves output that looks complete.

On disk the set is written into a hidden sibling folder (`.OUT.partial-PID`) and renamed into place; replacing a
set moves the old one aside first, and a kill between the two renames is undone by the next run's sweep
(atomic.sweep_stale). In an object store, where nothing can be renamed, the set is uploaded from a local folder,
shards and indexes first, the manifest last (publish_files, which also publishes a part of a set, anywhere).
Either way an existing OUT is replaced only with --overwrite and only if it holds a shard set and nothing else.
"""
from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from .. import storage
from ..errors import FastsegError
from ..format import MANIFEST, REPORT, check_replaceable
from ..atomic import old_path, partial_path, sweep_stale


@contextmanager
def local_target(out: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden folder to write the set into, moved to `out` when the block ends without an error; removed in any
    case. SIGTERM ends the block as an exit would (143), so a scheduler's kill cleans up too."""
    tmp = _prepare_out(out, overwrite)
    previous = signal.signal(signal.SIGTERM, _term_as_exit)
    try:
        yield tmp
        _commit(tmp, out)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(tmp, ignore_errors=True)


def bucket_target(root: str, overwrite: bool) -> dict[str, int]:
    """Check that a set may be written under a prefix of an object store; the objects there now (to replace), by
    size."""
    storage.check_bucket(root)
    existing = storage.sizes(root)
    if existing:
        if not overwrite:
            raise FastsegError(f"{root} already holds {len(existing)} object(s); pass --overwrite to replace the set "
                               "there, or choose another prefix")
        check_replaceable(root, sorted(existing))
    return existing


def publish_files(folder: Path, root, existing: dict[str, int], progress: bool = True, *,
                  last: str = MANIFEST) -> None:
    """Put a finished folder's files under `root` (a folder or a prefix) so that it never looks complete before it
    is: an old manifest (and an old `last`: the manifest, or a part's record) goes first, each file arrives whole
    (storage.put_file), the new `last` last; files of `existing` that the folder lacks are removed before it."""
    storage.delete(root, [name for name in dict.fromkeys((MANIFEST, last)) if name in existing])
    # the shards and indexes first, then what describes them (the report), the manifest (or `last`) last
    files = sorted((p for p in folder.iterdir() if p.name != last), key=lambda p: (p.name == REPORT, p.name))
    for path in tqdm(files, unit="file", desc="uploading", disable=not progress or not storage.at(root).uploads):
        storage.put_file(path, storage.join(root, path.name))
    storage.delete(root, sorted(set(existing) - {p.name for p in files} - {MANIFEST, last}))
    storage.put_file(folder / last, storage.join(root, last))


def _prepare_out(out: Path, overwrite: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    for line in sweep_stale(out):  # first: it may move a set back into place, which the checks below then see
        print(line)
    if out.exists():
        if not overwrite:
            raise FastsegError(f"{out} already exists; pass --overwrite to replace it, or choose another folder")
        if not out.is_dir():
            raise FastsegError(f"{out} is a file, not a shard set; not overwriting it: choose another OUT")
        check_replaceable(str(out), [p.name + ("/" if p.is_dir() else "") for p in out.iterdir()])
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _commit(tmp: Path, out: Path) -> None:
    """Move the finished set into place. Replacing takes two renames; a kill between them leaves OUT missing and
    the old set at its `.old` path, which the next run's sweep moves back (atomic.sweep_stale)."""
    if out.exists():
        old = old_path(out)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def _term_as_exit(*_):
    raise SystemExit(143)
