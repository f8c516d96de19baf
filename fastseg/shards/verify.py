"""`fastseg-shard --verify`: re-check a shard set against its manifest, reading it with webdataset's own reader."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import storage
from ..errors import FastsegError
from ..format import (IGNORE_INDEX, META_EXT, RAW_IMAGE_EXT, RAW_MASK_EXT, SampleMembers, listing, parse_index,
                      raw_pixels, sample_members)
from ..sets import open_set, shard_problems


def _check_index(path: Path, index_path: Path, index: list) -> list[str]:
    """Every index entry points at its member's data in the tar (offset and size), and every member is indexed."""
    try:
        with tarfile.open(path) as tar:
            members = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
    except (OSError, tarfile.TarError):
        return []  # the tar itself is reported unreadable below
    problems, indexed = [], set()
    for sample in index:
        for _, offset, size, name in sample:
            indexed.add(name)
            if members.get(name) != (offset, size):
                found = members.get(name)
                where = f"offset {found[0]} size {found[1]}" if found else "no such member"
                problems.append(f"{index_path}: {name} at offset {offset} size {size}, the tar has {where}")
    missing = sorted(set(members) - indexed)
    if missing:
        problems.append(f"{index_path}: {len(missing)} member(s) of the tar are not indexed ({listing(missing)})")
    return problems[:20] + ([f"{index_path}: … and {len(problems) - 20} more"] if len(problems) > 20 else [])


def _pixels(sample: dict, ext: str, size_ext: str | None, channels: int) -> np.ndarray:
    """A member's pixels: a raw member checked against the sample's size member, an encoded one decoded."""
    if ext in (RAW_IMAGE_EXT, RAW_MASK_EXT):
        return raw_pixels(sample[ext], sample[size_ext], channels)
    image = Image.open(io.BytesIO(sample[ext]))
    image.load()
    return np.asarray(image)


def _check_shard(root: Path, shard, valid_ids: set[int], names: SampleMembers) -> list[str]:
    path, index_path = root / shard.name, root / shard.index
    problems = shard_problems(root, shard)
    if not path.exists():
        return problems
    try:
        index = parse_index(index_path.read_text(), str(index_path))
    except (OSError, FastsegError) as err:
        problems.append(f"{index_path}: {err}")
        index = None
    if index is not None:
        problems += _check_index(path, index_path, index)
    import webdataset as wds  # here, not at the top: it imports torch, a second that only --verify needs

    count = 0
    try:
        for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
            count += 1
            where = f"{path}:{sample['__key__']}"
            image_ext = names.image_in(sample)
            needed = [names.mask, META_EXT] + ([names.size] if names.size else [])
            if image_ext is None or any(ext not in sample for ext in needed):
                problems.append(f"{where}: incomplete sample ({', '.join(k for k in sample if not k.startswith('__'))})")
                continue
            try:
                image = _pixels(sample, image_ext, names.size, 3)
                mask = _pixels(sample, names.mask, names.size, 1)
            except FastsegError as err:  # a raw member whose size is not what its size member says
                problems.append(f"{where}: {err}")
                continue
            except Exception as err:
                problems.append(f"{where}: does not decode ({err})")
                continue
            if mask.shape != image.shape[:2]:
                problems.append(f"{where}: mask {mask.shape[::-1]} differs from image {image.shape[1::-1]}")
            extra = set(np.unique(mask).tolist()) - valid_ids
            if extra:
                problems.append(f"{where}: mask values {sorted(extra)} are not classes")
    except Exception as err:  # a damaged tar stops the reader
        problems.append(f"{path}: unreadable as a tar ({err})")
    if count != shard.samples:
        problems.append(f"{path}: {count} samples, manifest says {shard.samples}")
    if index is not None and len(index) != shard.samples:
        problems.append(f"{index_path}: {len(index)} samples, manifest says {shard.samples}")
    return problems


def verify(root, progress: bool = True) -> list[str]:
    """Every problem found (empty when the set is sound). A set in a bucket is read shard by shard into a
    temporary folder and checked the same way."""
    shard_set = open_set(root)  # one listing: which files are there, for every shard below
    manifest = shard_set.manifest
    valid_ids = {c.id for c in manifest.classes} | {IGNORE_INDEX}
    names = sample_members(manifest.storage)
    shards = [shard for split in manifest.splits.values() for shard in split.shards]
    problems = []
    for shard in tqdm(shards, unit="shard", desc="verifying", disable=not progress):
        with storage.local_copies(root, [shard.name, shard.index], shard_set.listed) as folder:  # a store's: downloaded one by one
            problems += [p.replace(str(folder), str(root).rstrip("/")) for p in
                         _check_shard(folder, shard, valid_ids, names)]
    return problems
