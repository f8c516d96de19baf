"""The pairs of a source folder per split, and how their masks become class ids, decided once (and the same way on
every machine that shards a part of it): an annotation tool's export or a Hub parquet set (annotations.py), a
public dataset's own (datasets.py), or the generic layouts' (pairs.py)
with the mask kind detected from a spread of masks (masks.py). Also the worker pool that encodes them."""
from __future__ import annotations

import random
import signal
from contextlib import contextmanager
from pathlib import Path

from ..errors import FastsegError
from ..format import listing
from ..processes import workers_starting
from . import annotations
from . import masks as maskmod
from .datasets import KNOWN_LAYOUTS, recognise
from .options import ShardOptions
from .pairs import Pair, compile_pair_key, find_pairs, split_off_val


def pairs_and_spec(src: Path, opts: ShardOptions) -> tuple[dict[str, list[Pair]], maskmod.MaskSpec, str]:
    """The pairs per split, how their masks become class ids, and the layout they were found in (printed, and named
    in the manifest and the report): an annotation tool's or the Hub's (annotations.py), a public dataset's own
    (datasets.py), or the generic layouts' (pairs.py) with the mask kind detected from a spread of masks."""
    if not (opts.images or opts.masks or opts.pair_key):
        annotated = annotations.recognise(src, opts)  # COCO, labelme, parquet: made into pairs of files first
        if annotated is not None:
            print(annotated.describe())
            splits = split_off_val(annotated.splits, opts.val_fraction, opts.seed, opts.group_by)
            return splits, annotated.spec, annotated.name
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
        return split_off_val(known.splits, opts.val_fraction, opts.seed, opts.group_by), known.spec, known.name
    pair_key = compile_pair_key(opts.pair_key) if opts.pair_key else None
    found = find_pairs(src, opts.images, opts.masks, pair_key, also_tried=KNOWN_LAYOUTS + annotations.LAYOUTS)
    if found.unpaired:
        named = listing([str(p) for p in found.unpaired])
        if not opts.skip_unpaired:
            raise FastsegError(f"{len(found.unpaired)} file(s) without a partner: {named}; "
                               "rename them to match, or pass --skip-unpaired")
        print(f"skipping {len(found.unpaired)} unpaired file(s): {named}")
    splits = split_off_val(found.splits, opts.val_fraction, opts.seed, opts.group_by)
    print(f"found {found.layout}: {', '.join(f'{split} {len(pairs)}' for split, pairs in splits.items())}")
    everything = [p for pairs in splits.values() for p in pairs]
    spread = [p.mask for p in everything[:: max(1, len(everything) // 32)]]
    return splits, maskmod.detect_spec(spread, opts.classes, opts.ignore_value, threshold=opts.mask_threshold,
                                       value_map=opts.map_values), found.layout


def in_shard_order(splits: dict[str, list[Pair]], seed: int) -> dict[str, list[Pair]]:
    """Each split's pairs in the order they go into shards: a seeded shuffle, so that no shard holds one sequence
    (and every part of a set written on many machines agrees on it)."""
    ordered = {}
    for split, pairs in splits.items():
        ordered[split] = list(pairs)
        random.Random(seed).shuffle(ordered[split])
    return ordered


class InlinePool:
    """One worker: the pool's interface run in this process, with no process to start or to hand samples to."""

    def imap(self, function, items, chunksize: int = 1):
        return map(function, items)

    imap_unordered = imap


@contextmanager
def encoding_pool(workers: int):
    """The worker pool that encodes samples (for one worker, this process). Workers take SIGTERM's default (die): a
    forked one would inherit the writer's handler, and the pool's own terminate() could then leave one waiting
    forever on a queue lock that a killed sibling held."""
    if workers <= 1:
        yield InlinePool()
        return
    with workers_starting() as context, context.Pool(workers, signal.signal, (signal.SIGTERM, signal.SIG_DFL)) as pool:
        yield pool


def discover_classes(pool, splits: dict[str, list[Pair]], spec: maskmod.MaskSpec) -> None:
    """Colour masks without a class file: the classes are the colours found in all of them (black first)."""
    if spec.kind == "rgb" and not spec.fixed:
        masks = [p.mask for pairs in splits.values() for p in pairs]
        spec.colors = maskmod.discover_colors(pool.imap_unordered(maskmod.colors_in, masks, 8))
        spec.names = [f"class_{i}" for i in range(len(spec.colors))]
