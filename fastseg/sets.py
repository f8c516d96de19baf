"""Reading a shard set, with no torch: open it (one listing, one manifest read), check it at start-up (every shard
there at its size, and on disk its sha256), and find where each sample's members lie (the index files, on local
disk: a store's fetched once into the cache, by shard sha256). The loaders, fastseg-shard's report, --verify and
merge, and the benchmarks read sets through here; format.py is the contract they read.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import storage
from .errors import FastsegError
from .format import MANIFEST, Manifest, ShardInfo, parse_index, parse_manifest, sha256_file

Spans = dict[str, tuple[int, int]]  # a sample's members: extension -> (offset, size) in its shard


@dataclass(frozen=True)
class ShardSet:
    """A shard set as read once at start-up and passed down from there: where it is, its manifest, and the size of
    every file or object in it, from the one listing that found the manifest (so the checks need no second one)."""

    root: str | Path  # a folder, or a prefix in an object store (storage.py)
    manifest: Manifest
    listed: dict[str, int] | None = None


def open_set(shards: str | os.PathLike | ShardSet) -> ShardSet:
    """Find and check `manifest.json` of a folder or a prefix in an object store; every reader starts here: one
    listing and one read (in a store, both at once)."""
    if isinstance(shards, ShardSet):
        return shards
    root = storage.location(str(shards))
    where = storage.join(root, MANIFEST)
    with ThreadPoolExecutor(1) as pool:
        # in a store, the manifest is asked for beside the listing: one round trip, not two, before the indexes
        early = pool.submit(storage.read, where) if storage.at(root).streamed else None
        listed = storage.sizes(root, missing=f"{root}: no such shard folder; make one with `fastseg-shard DATA "
                                             f"{root}`")
        if MANIFEST not in listed:  # whatever the early read found, the listing says what the folder is
            tars = [n for n in listed if n.endswith(".tar")]
            if tars:
                raise FastsegError(f"{root} has {len(tars)} shard(s) but no {MANIFEST}: an unfinished fastseg-shard "
                                   "run; shard the data again (fastseg-shard ... --overwrite)")
            raise FastsegError(f"{root}: no {MANIFEST} here; not a fastseg shard set (make one with fastseg-shard "
                               f"DATA {root})")
        try:
            text = (early.result() if early else storage.read(where)).decode()
        except (OSError, UnicodeDecodeError) as err:
            raise FastsegError(f"{where}: unreadable manifest ({err}); shard the data again") from err
    return ShardSet(root, parse_manifest(text, str(where)), listed)


def load_manifest(shards: str | os.PathLike | ShardSet) -> Manifest:
    return open_set(shards).manifest


def cache_root(choice: str | os.PathLike | None = None) -> Path:
    """The machine's cache folder (sets' indexes, the shard cache, fetched checkpoints): `choice`, else
    $FASTSEG_CACHE, else $XDG_CACHE_HOME/fastseg, else ~/.cache/fastseg."""
    if choice is not None:
        return Path(choice).expanduser()
    if os.environ.get("FASTSEG_CACHE"):
        return Path(os.environ["FASTSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastseg"


def size_problems(root, listed: dict[str, int], shards: list[ShardInfo], *,
                  record: str = "the manifest") -> list[str]:
    """Every shard and index of `shards` (as `record` lists them) that the listing `listed` (name -> size) lacks,
    and every shard of another size: the one check that a set's files are all there."""
    problems = []
    for shard in shards:
        where = storage.join(root, shard.name)
        if shard.name not in listed:
            problems.append(f"{where}: listed in {record} but missing")
        elif listed[shard.name] != shard.bytes:
            problems.append(f"{where}: {listed[shard.name]} bytes, {record} says {shard.bytes}")
        if shard.index not in listed:
            problems.append(f"{storage.join(root, shard.index)}: listed in {record} but missing")
    return problems


def shard_problems(root: Path, shard: ShardInfo, *, checksums: bool = True) -> list[str]:
    """What is wrong with one shard of a set on disk and its index, as the manifest records them: presence, size
    and (with `checksums`) sha256. Empty when nothing is. The start-up check and --verify both use it."""
    listed = {name: (root / name).stat().st_size for name in (shard.name, shard.index) if (root / name).exists()}
    problems = size_problems(root, listed, [shard])
    if problems or not checksums:
        return problems
    if sha256_file(root / shard.name) != shard.sha256:
        problems.append(f"{root / shard.name}: sha256 does not match the manifest")
    if shard.index_sha256 and sha256_file(root / shard.index) != shard.index_sha256:
        problems.append(f"{root / shard.index}: sha256 does not match the manifest")
    return problems


def check_shards(shard_set: ShardSet, split: str, checksums: bool = True) -> tuple[list[str], list[Path]]:
    """The split's shards (paths, or URLs) and their local index files, after checking each shard and index against
    the manifest, by the sizes of the listing the set was opened with.

    Shards in an object store are not hashed at start-up: that would read every byte before the first batch and
    defeat streaming; `fastseg-shard --verify URL` checks everything."""
    root, manifest = shard_set.root, shard_set.manifest
    listed = shard_set.listed if shard_set.listed is not None else storage.sizes(root)
    shards = manifest.split(split).shards
    damaged = f"the set is damaged: re-shard or restore it (fastseg-shard --verify {root} lists every problem)"
    problems = size_problems(root, listed, shards)
    if not problems and checksums and storage.at(root).hashed_at_start:
        problems = next((found for shard in shards if (found := shard_problems(Path(root), shard))), [])
    if problems:
        raise FastsegError(f"{problems[0]}; {damaged}")

    def index(shard) -> Path:
        return storage.cached(storage.join(root, shard.index), cache_root() / "indexes" / f"{shard.sha256}.idx")

    with ThreadPoolExecutor(16) as pool:  # a store's indexes fetched together: a GET each, tens of ms apiece
        indexes = list(pool.map(index, shards))
    return [str(storage.join(root, s.name)) for s in shards], indexes


def index_samples(index: Path) -> list[tuple[str, Spans]]:
    """Each sample of a shard's index file, in order: its key and where its members lie."""
    return [(sample[0][3].partition(".")[0], {ext: (offset, size) for ext, offset, size, _ in sample})
            for sample in parse_index(index.read_text(), str(index))]
