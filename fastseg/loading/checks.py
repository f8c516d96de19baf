"""The loaders' start-up checks: every shard of a split is there with the size (and on disk the sha256) that the
manifest records, and the index of every shard is on local disk (a bucket's indexes are cached, by shard sha256)."""
from __future__ import annotations

import os
from pathlib import Path

from .. import storage
from ..errors import FastsegError
from ..format import Manifest, ShardSet, shard_problems
from ..storage import partial_path


def check_shards(shard_set: ShardSet, split: str, checksums: bool = True) -> tuple[list[str], list[Path]]:
    """The split's shards (paths, or s3:// URLs) and their local index files, after checking that each shard is
    there with the size the manifest records, and on disk (with `checksums`) its sha256 too.

    In a bucket the sha256 is not checked at start-up: that would read every byte before the first batch and
    defeat streaming. Sizes are, from the listing made when the set was opened; `fastseg-shard --verify s3://...`
    checks everything."""
    manifest = shard_set.manifest
    if storage.is_remote(shard_set.root):
        return _check_remote(str(shard_set.root), manifest, shard_set.listed, split)
    root = Path(shard_set.root)
    shards = manifest.split(split).shards
    for shard in shards:
        problems = shard_problems(root, shard, checksums=checksums)
        if problems:
            raise FastsegError(f"{problems[0]}; the set is damaged: re-shard or restore it (fastseg-shard --verify "
                               f"{root} lists every problem)")
    return [str(root / s.name) for s in shards], [root / s.index for s in shards]


def index_cache() -> Path:
    """Where the index files of remote sets are kept (small: one line per sample), by shard sha256."""
    return Path(os.environ.get("FASTSEG_CACHE", Path.home() / ".cache" / "fastseg")) / "indexes"


def _check_remote(root: str, manifest: Manifest, sizes: dict[str, int], split: str) -> tuple[list[str], list[Path]]:
    urls, indexes = [], []
    for shard in manifest.split(split).shards:
        url = storage.join(root, shard.name)
        if shard.name not in sizes or shard.index not in sizes:
            raise FastsegError(f"{url}: listed in the manifest but missing from the bucket (or its index is); "
                               "re-shard or restore it")
        if sizes[shard.name] != shard.bytes:
            raise FastsegError(f"{url}: {sizes[shard.name]} bytes, the manifest says {shard.bytes}; the shard is "
                               "damaged, re-shard")
        local = index_cache() / f"{shard.sha256}.idx"
        if not local.exists():  # written beside and renamed, so a cached index is always whole
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = partial_path(local)
            tmp.write_bytes(storage.read(storage.join(root, shard.index)))
            os.replace(tmp, local)
        urls.append(url)
        indexes.append(local)
    return urls, indexes
