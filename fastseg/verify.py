"""`fastseg-shard --verify`: re-check a shard set against its manifest, reading it with webdataset's own reader."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image
from tqdm import tqdm

from . import remote
from .errors import FastsegError
from .format import IGNORE_INDEX, MASK_EXT, index_name, load_manifest, parse_index, sha256_file


def _check_shard(root: Path, shard, valid_ids: set[int]) -> list[str]:
    path = root / shard.name
    if not path.exists():
        return [f"{path}: missing"]
    problems = []
    if path.stat().st_size != shard.bytes:
        problems.append(f"{path}: {path.stat().st_size} bytes, manifest says {shard.bytes}")
    if sha256_file(path) != shard.sha256:
        problems.append(f"{path}: sha256 differs from the manifest")
    try:
        index = parse_index((root / index_name(shard.name)).read_text(), str(root / shard.index))
    except (OSError, FastsegError) as err:
        problems.append(f"{root / shard.index}: {err}")
        index = None
    count = 0
    try:
        for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
            count += 1
            where = f"{path}:{sample['__key__']}"
            image_ext = next((k for k in sample if k.startswith("image.")), None)
            if image_ext is None or MASK_EXT not in sample or "json" not in sample:
                problems.append(f"{where}: incomplete sample ({', '.join(k for k in sample if not k.startswith('__'))})")
                continue
            try:
                image = Image.open(io.BytesIO(sample[image_ext]))
                image.load()
                mask = np.asarray(Image.open(io.BytesIO(sample[MASK_EXT])))
            except Exception as err:
                problems.append(f"{where}: does not decode ({err})")
                continue
            if mask.shape != (image.size[1], image.size[0]):
                problems.append(f"{where}: mask {mask.shape[::-1]} differs from image {image.size}")
            extra = set(np.unique(mask).tolist()) - valid_ids
            if extra:
                problems.append(f"{where}: mask values {sorted(extra)} are not classes")
    except Exception as err:  # a damaged tar stops the reader
        problems.append(f"{path}: unreadable as a tar ({err})")
    if count != shard.samples:
        problems.append(f"{path}: {count} samples, manifest says {shard.samples}")
    if index is not None and len(index) != shard.samples:
        problems.append(f"{root / shard.index}: {len(index)} samples, manifest says {shard.samples}")
    return problems


def verify(root, progress: bool = True) -> list[str]:
    """Every problem found (empty when the set is sound). A set in a bucket is read shard by shard into a
    temporary folder and checked the same way."""
    manifest = load_manifest(root)
    valid_ids = {c.id for c in manifest.classes} | {IGNORE_INDEX}
    shards = [shard for split in manifest.splits.values() for shard in split.shards]
    problems = []
    present = remote.sizes(str(root)) if remote.is_remote(root) else {}
    for shard in tqdm(shards, unit="shard", desc="verifying", disable=not progress):
        if not remote.is_remote(root):
            problems += _check_shard(root, shard, valid_ids)
            continue
        with tempfile.TemporaryDirectory(prefix="fastseg-verify-") as tmp:
            for name in (shard.name, shard.index):
                if name in present:
                    remote.download(remote.join(str(root), name), Path(tmp) / name)
            problems += [p.replace(tmp, str(root).rstrip("/")) for p in _check_shard(Path(tmp), shard, valid_ids)]
    return problems
