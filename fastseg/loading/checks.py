"""The loaders' start-up checks: every shard of a split is there with the size that the manifest records (and on
local disk, with `checksums`, its sha256), and the index of every shard is on local disk (a store's indexes are
cached, by shard sha256)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import storage
from ..errors import FastsegError
from ..format import ShardSet, shard_problems
from .cache import cache_root


def check_shards(shard_set: ShardSet, split: str, checksums: bool = True) -> tuple[list[str], list[Path]]:
    """The split's shards (paths, or URLs) and their local index files, after checking each shard and index against
    the manifest, by the sizes of the listing the set was opened with.

    Shards in an object store are not hashed at start-up: that would read every byte before the first batch and
    defeat streaming; `fastseg-shard --verify URL` checks everything."""
    root, manifest = shard_set.root, shard_set.manifest
    listed = shard_set.listed if shard_set.listed is not None else storage.sizes(root)
    shards = manifest.split(split).shards
    damaged = f"the set is damaged: re-shard or restore it (fastseg-shard --verify {root} lists every problem)"
    for shard in shards:
        where = storage.join(root, shard.name)
        if shard.name not in listed or shard.index not in listed:
            missing = where if shard.name not in listed else storage.join(root, shard.index)
            raise FastsegError(f"{missing}: listed in the manifest but missing; {damaged}")
        if listed[shard.name] != shard.bytes:
            raise FastsegError(f"{where}: {listed[shard.name]} bytes, the manifest says {shard.bytes}; {damaged}")
    if checksums and not storage.is_remote(root):
        for shard in shards:
            problems = shard_problems(Path(root), shard)
            if problems:
                raise FastsegError(f"{problems[0]}; {damaged}")
    def index(shard) -> Path:
        return storage.cached(storage.join(root, shard.index), index_cache() / f"{shard.sha256}.idx")

    with ThreadPoolExecutor(16) as pool:  # a store's indexes fetched together: a GET each, tens of ms apiece
        indexes = list(pool.map(index, shards))
    return [str(storage.join(root, s.name)) for s in shards], indexes


def index_cache() -> Path:
    """Where the index files of sets in object stores are kept (small: one line per sample), by shard sha256."""
    return cache_root() / "indexes"
