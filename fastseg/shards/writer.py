"""Encoded samples → tar shards, their DALI indexes and the manifest, in one local folder.

Each split is one ordered stream of encoded samples from the worker pool, cut into nearly equal shards; every
shard's index is made by reading the finished tar back (which checks it), and the manifest, with the statistics
gathered on the way, is written last.
"""
from __future__ import annotations

import io
import math
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import FastsegError
from ..format import (GREY, IGNORE_INDEX, MANIFEST, Manifest, ShardInfo, SplitInfo, format_index, index_name, sha256_file,
                      shard_name)
from .checks import set_warnings
from .encode import Encoded, SizeMismatch, encode_job
from .masks import MaskSpec
from .pairs import Pair

def plan_shards(pairs: list[Pair], shard_size: int, max_count: int | None) -> list[list[Pair]]:
    """Nearly equal shards: as few as the byte and count limits allow, with samples spread evenly."""
    total = sum(p.image.stat().st_size + p.mask.stat().st_size for p in pairs)
    count = max(1, math.ceil(total / shard_size), math.ceil(len(pairs) / max_count) if max_count else 1)
    count = min(count, len(pairs))
    return [pairs[len(pairs) * i // count : len(pairs) * (i + 1) // count] for i in range(count)]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_index(tar_path: Path) -> int:
    """Write the DALI index beside a finished shard, reading the tar back (which also checks it); returns samples."""
    samples, last_key = [], None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key != last_key:
                samples.append([])
                last_key = key
            samples[-1].append((ext, member.offset_data, member.size, member.name))
    (tar_path.parent / index_name(tar_path.name)).write_text(format_index(samples))
    return len(samples)


class Stats:
    """Running totals over the training images and all masks, and per sample only what the set's checks compare
    (checks.py): its key, two 64-bit hashes of its image (looks.py) and whether its mask has a labelled pixel."""

    def __init__(self):
        self.pixel_hist = np.zeros((3, 256), np.int64)
        self.class_hist = {}
        self.class_images = {}  # per split: how many masks hold each stored value
        self.sizes = defaultdict(set)
        self.looks = defaultdict(list)  # per split: (key, pixel hash, perceptual hash)
        self.unlabelled = defaultdict(list)  # per split: keys whose mask is all ignore
        self.grey = False  # some raw image was stored as one channel

    def add(self, split: str, sample: Encoded) -> None:
        if split == "train":
            self.pixel_hist += sample.pixel_hist
        self.class_hist.setdefault(split, np.zeros(256, np.int64))
        self.class_hist[split] += sample.class_hist
        self.class_images.setdefault(split, np.zeros(256, np.int64))
        self.class_images[split] += sample.class_hist > 0
        self.sizes[split].add(sample.size)
        self.looks[split].append((sample.key, sample.pixel_hash, sample.look))
        if not sample.class_hist[:IGNORE_INDEX].any():
            self.unlabelled[split].append(sample.key)
        self.grey |= sample.grey

    def to_record(self) -> dict:
        """Exact integer counts (a part's share, for the merge): pixel values per channel, stored mask values and
        the masks holding each per split, image sizes per split, and the samples' hashes."""
        return {"pixel_hist": self.pixel_hist.tolist(),
                "class_hist": {split: hist.tolist() for split, hist in self.class_hist.items()},
                "class_images": {split: hist.tolist() for split, hist in self.class_images.items()},
                "sizes": {split: sorted([list(wh) for wh in sizes]) for split, sizes in self.sizes.items()},
                "looks": {split: [[key, f"{exact:016x}", f"{look:016x}"] for key, exact, look in rows]
                          for split, rows in self.looks.items()},
                "unlabelled": dict(self.unlabelled), "grey": self.grey}

    @classmethod
    def from_records(cls, records: list[dict]) -> Stats:
        """The counts of a whole set from its parts' records: sums of integers, so exactly a single run's. Records
        written before the checks lack the hashes: their samples are not compared."""
        total = cls()
        for record in records:
            total.pixel_hist += np.array(record["pixel_hist"], np.int64)
            for name in ("class_hist", "class_images"):
                for split, hist in record.get(name, {}).items():
                    kept = getattr(total, name)
                    kept.setdefault(split, np.zeros(256, np.int64))
                    kept[split] += np.array(hist, np.int64)
            for split, sizes in record["sizes"].items():
                total.sizes[split] |= {tuple(wh) for wh in sizes}
            for split, rows in record.get("looks", {}).items():
                total.looks[split] += [(key, int(exact, 16), int(look, 16)) for key, exact, look in rows]
            for split, keys in record.get("unlabelled", {}).items():
                total.unlabelled[split] += keys
            total.grey |= record.get("grey", False)
        return total

    def mean_std(self) -> tuple[list[float], list[float]]:
        if not self.pixel_hist.any():  # no training split: no statistics to take
            return [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]
        values = np.arange(256, dtype=np.float64)
        count = self.pixel_hist.sum(axis=1)
        mean = (self.pixel_hist * values).sum(axis=1) / count
        var = (self.pixel_hist * values**2).sum(axis=1) / count - mean**2
        return [round(float(m), 4) for m in mean], [round(float(max(s, 1e-6)), 4) for s in np.sqrt(var)]


def write_set(pool, splits: dict[str, list[Pair]], spec: MaskSpec, folder: Path, *, storage: dict[str, str],
              layout: str | None = None, **options) -> Manifest:
    """A whole set in `folder`: every split's shards and indexes (write_shards), then the manifest, written last
    and returned; `layout`: the source's, as sources.pairs_and_spec found it."""
    infos, stats = write_shards(pool, splits, spec, folder, storage=storage, **options)
    manifest = manifest_from(infos, stats, spec, storage, layout)
    (folder / MANIFEST).write_text(manifest.to_json())
    return manifest


def write_shards(pool, splits: dict[str, list[Pair]], spec: MaskSpec, folder: Path, *, shard_size: int,
                 max_count: int | None, resize_masks: bool, progress: bool, storage: dict[str, str],
                 part: tuple[int, int] | None = None) -> tuple[dict[str, SplitInfo], Stats]:
    """Every split's shards and indexes in `folder`, the pairs in the order given (sources.in_shard_order), and the
    statistics gathered on the way. Samples that fail their checks are collected and reported together, before
    anything that looks finished is written. A `part` (I, N) writes under that part's shard names."""
    stats, errors, infos = Stats(), [], {}
    total = sum(len(p) for p in splits.values())
    bar = tqdm(total=total, unit="sample", desc="sharding", disable=not progress)
    for split, pairs in splits.items():
        jobs = [(p, spec, resize_masks, storage) for p in pairs]
        results = pool.imap(encode_job, jobs, chunksize=4)  # one ordered stream per split: no stall at shard edges
        shards = []
        for number, chunk in enumerate(plan_shards(pairs, shard_size, max_count)):
            path = folder / shard_name(split, number, part)
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for result in (next(results) for _ in chunk):
                    bar.update()
                    if isinstance(result, FastsegError):
                        errors.append(result)
                        continue
                    stats.add(split, result)
                    for ext, data in result.members.items():
                        add_member(tar, f"{result.key}.{ext}", data)
            index = folder / index_name(path.name)
            shards.append(ShardInfo(path.name, write_index(path), path.stat().st_size, sha256_file(path),
                                    index.name, sha256_file(index)))
        infos[split] = SplitInfo(sum(s.samples for s in shards), shards)
    bar.close()
    if errors:
        _raise_collected(errors)
    return infos, stats


def manifest_from(infos: dict[str, SplitInfo], stats: Stats, spec: MaskSpec, storage: dict[str, str],
                  layout: str | None = None) -> Manifest:
    """The manifest of a set: its splits and shards, and the classes and statistics from the gathered counts."""
    present = sum(stats.class_hist.values()) if stats.class_hist else np.zeros(256, np.int64)
    classes = spec.classes(present)
    mean, std = stats.mean_std()
    train_hist = stats.class_hist.get("train", present)
    split_counts = {name: {split: {c.name: int(hist[c.id]) for c in classes} for split, hist in counts.items()}
                    for name, counts in (("class_pixels", stats.class_hist), ("class_images", stats.class_images))}
    statistics = {**split_counts, "images": {split: info.samples for split, info in infos.items()},
                  "warnings": set_warnings(stats, classes)}
    return Manifest(
        classes=classes, mean=mean, std=std, splits=infos,
        class_pixels={c.name: int(train_hist[c.id]) for c in classes},
        sizes={s: sorted([list(wh) for wh in sizes]) for s, sizes in stats.sizes.items()},
        storage={**storage, **({"grey": GREY} if stats.grey else {})}, statistics=statistics, layout=layout,
    )


def _raise_collected(errors: list[FastsegError]) -> None:
    mismatched = [e for e in errors if isinstance(e, SizeMismatch)]
    lines = [str(e) for e in errors[:10]] + ([f"… and {len(errors) - 10} more"] if len(errors) > 10 else [])
    hint = "; pass --resize-masks to resize masks (nearest neighbour)" if mismatched else ""
    raise FastsegError(f"{len(errors)} sample(s) failed the checks, nothing was written{hint}:\n  " + "\n  ".join(lines))


