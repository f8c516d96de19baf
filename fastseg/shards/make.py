"""`shard()`: image/mask folders → a verified shard set, the stages in order: find the pairs and decide how masks
become class ids (datasets.py or pairs.py + masks.py), encode them in a worker pool (encode.py), write shards,
indexes and manifest (writer.py), and put the set in place on disk or in a bucket (publish.py).
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import storage
from ..errors import FastsegError
from ..format import Manifest
from ..processes import workers_starting
from . import masks as maskmod
from .datasets import KNOWN_LAYOUTS, recognise
from .pairs import Pair, compile_pair_key, find_pairs, split_off_val
from .publish import bucket_target, local_target, upload_set
from .writer import write_set


@dataclass
class ShardOptions:
    images: Path | None = None
    masks: Path | None = None
    classes: Path | None = None
    ignore_value: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    shard_size: int = 256 * 1024**2
    max_count: int | None = None
    resize_masks: bool = False
    skip_unpaired: bool = False
    overwrite: bool = False
    keep_zero_label: bool = False  # ADE20K: keep value 0 ("other") as a class instead of ignoring it
    mask_threshold: int | None = None  # binary masks by brightness (JPEG or anti-aliased masks)
    pair_key: str | None = None  # a regex whose first group pairs image and mask stems
    map_values: dict[int, int] | None = None  # source mask value → class id (255 = ignore)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True


def shard(src: Path, out, opts: ShardOptions) -> Manifest:
    """Shard SRC into OUT: a folder, or an s3:// prefix (written locally first, then uploaded, manifest last)."""
    start = time.perf_counter()
    if storage.is_remote(out):
        root = str(out).rstrip("/")
        existing = bucket_target(root, opts.overwrite)  # before any work: an unreachable bucket fails in seconds
        with tempfile.TemporaryDirectory(prefix="fastseg-shard-") as tmp:
            manifest = _write(src, Path(tmp), opts)
            _summary(manifest, f"{root} (uploading)", time.perf_counter() - start)
            upload_set(Path(tmp), root, existing, opts.progress)
        print(f"uploaded to {root}, manifest last")
        return manifest
    with local_target(out, opts.overwrite) as tmp:
        manifest = _write(src, tmp, opts)
    _summary(manifest, out, time.perf_counter() - start)
    return manifest


def _write(src: Path, folder: Path, opts: ShardOptions) -> Manifest:
    splits, spec = _pairs_and_spec(src, opts)
    # workers take SIGTERM's default (die): a forked one would inherit the writer's handler, and the pool's own
    # terminate() could then leave one waiting forever on a queue lock that a killed sibling held
    with workers_starting() as context, context.Pool(max(1, opts.workers), signal.signal,
                                                     (signal.SIGTERM, signal.SIG_DFL)) as pool:
        if spec.kind == "rgb" and not spec.fixed:
            masks = [p.mask for pairs in splits.values() for p in pairs]
            spec.colors = maskmod.discover_colors(pool.imap_unordered(maskmod.colors_in, masks, 8))
            spec.names = [f"class_{i}" for i in range(len(spec.colors))]
        return write_set(pool, splits, spec, folder, seed=opts.seed, shard_size=opts.shard_size,
                         max_count=opts.max_count, resize_masks=opts.resize_masks, progress=opts.progress)


def _pairs_and_spec(src: Path, opts: ShardOptions) -> tuple[dict[str, list[Pair]], maskmod.MaskSpec]:
    """The pairs per split and how their masks become class ids: a public dataset's own (datasets.py), or the
    generic layouts' (pairs.py) with the mask kind detected from a spread of masks."""
    known = None if opts.images or opts.masks or opts.pair_key else recognise(src, opts.keep_zero_label)
    if known is not None:
        own = [flag for flag, value in (("--classes", opts.classes), ("--ignore-value", opts.ignore_value),
                                        ("--mask-threshold", opts.mask_threshold), ("--map-values", opts.map_values))
               if value is not None]
        if own:
            raise FastsegError(f"{src} is {known.name}, which brings its own class table: {', '.join(own)} does not "
                               "apply; to use it, shard the folders with --images DIR --masks DIR")
        print(known.describe())
        for split, why in known.skipped.items():
            print(f"skipping the {split} split: {why}")
        return split_off_val(known.splits, opts.val_fraction, opts.seed), known.spec
    pair_key = compile_pair_key(opts.pair_key) if opts.pair_key else None
    found = find_pairs(src, opts.images, opts.masks, pair_key, also_tried=KNOWN_LAYOUTS)
    if found.unpaired:
        listing = ", ".join(str(p) for p in found.unpaired[:5]) + (" …" if len(found.unpaired) > 5 else "")
        if not opts.skip_unpaired:
            raise FastsegError(f"{len(found.unpaired)} file(s) without a partner: {listing}; "
                               "rename them to match, or pass --skip-unpaired")
        print(f"skipping {len(found.unpaired)} unpaired file(s): {listing}")
    splits = split_off_val(found.splits, opts.val_fraction, opts.seed)
    everything = [p for pairs in splits.values() for p in pairs]
    spread = [p.mask for p in everything[:: max(1, len(everything) // 32)]]
    return splits, maskmod.detect_spec(spread, opts.classes, opts.ignore_value, threshold=opts.mask_threshold,
                                       value_map=opts.map_values)


def _summary(manifest: Manifest, out: Path, seconds: float) -> None:
    samples = sum(s.samples for s in manifest.splits.values())
    nbytes = sum(sh.bytes for s in manifest.splits.values() for sh in s.shards)
    per_split = ", ".join(f"{name} {s.samples} in {len(s.shards)} shard(s)" for name, s in manifest.splits.items())
    print(f"wrote {out}: {per_split}; {nbytes / 1e6:.1f} MB; {manifest.num_classes} classes "
          f"({', '.join(c.name for c in manifest.classes[:12])}{' …' if manifest.num_classes > 12 else ''}); "
          f"{seconds:.1f} s, {samples / max(seconds, 1e-9):.1f} samples/s")
