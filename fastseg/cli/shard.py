"""fastseg-shard SRC OUT: image/mask folders → WebDataset shards, DALI indexes and a manifest."""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .. import storage
from ..shards import ShardOptions, merge, parse_part, shard, verify
from ..shards.encode import STORES
from ..shards.masks import parse_value_map
from ..storage import location
from . import configs, run_cli


SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
              "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """Bytes from a size: 256MB is 256·10⁶ bytes, 256MiB 256·2²⁰."""
    number = text.rstrip("bBiIkKmMgG")
    unit = text[len(number):].lower()
    try:
        return int(float(number) * SIZE_UNITS[unit])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB or 256MB)") from None


def option_default(name: str):
    """A ShardOptions field's default: the flags read it from there rather than writing it again."""
    found = next(f for f in fields(ShardOptions) if f.name == name)
    return found.default_factory() if found.default is MISSING else found.default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastseg-shard", description=__doc__)
    p.add_argument("src", type=location, nargs="?",
                   help="data folder: images/ + masks/, train/val/test splits, trainA/trainB, or Pascal VOC 2012, "
                        "Cityscapes, ADE20K, CamVid (SegNet), DRIVE, Carvana or Oxford-IIIT Pet as they ship")
    p.add_argument("out", type=location, nargs="?",
                   help="output folder (or s3://bucket/prefix) for shards and manifest.json")
    p.add_argument("--verify", type=location, metavar="OUT", help="re-check an existing shard set (folder or "
                   "s3:// prefix) and exit")
    p.add_argument("--part", metavar="I/N",
                   help="write part I of N (counted from 0) of the set, on one of N machines; 'auto' reads a SLURM job "
                        "array's task id and count; then --merge OUT")
    p.add_argument("--merge", type=location, metavar="OUT",
                   help="write the one manifest of a set written with --part, once all its parts are there, and exit")
    p.add_argument("--images", type=Path, help="image folder (with --masks, instead of SRC's layout)")
    p.add_argument("--masks", type=Path, help="mask folder matching --images")
    p.add_argument("--classes", type=Path, help='JSON list of {"name", "color"}; order gives the class ids')
    p.add_argument("--ignore-value", type=int, help="a mask value to store as 255 (ignore), e.g. 11 for CamVid's void")
    p.add_argument("--mask-threshold", type=int, metavar="T",
                   help="binary masks stored lossy or anti-aliased (JPEG masks, say): brightness >= T is foreground")
    p.add_argument("--map-values", metavar="SRC:DST,...",
                   help="mask values to class ids, e.g. 1:1,2:0,3:255 (255 = ignore); any other value is an error")
    p.add_argument("--store", choices=STORES, default=option_default("store"),
                   help="how images and masks are stored: auto (default: JPEG sets as source; sets without JPEG "
                        "files as raw images and PNG masks), source (image bytes as they are, masks as fast PNG), "
                        "fast-png (lossless images re-encoded with unfiltered rows), raw (images and masks as pixels, "
                        "never decoded; no JPEG sets). JPEG is never re-encoded")
    p.add_argument("--pair-key", metavar="REGEX",
                   help="pair images and masks by the regex's first group of their name stems, e.g. '^(\\d+)_' "
                        "pairs 21_training.tif with 21_manual1.gif")
    p.add_argument("--group-by", metavar="REGEX",
                   help="carve the validation split by whole groups: the regex's first group of an image's name stem "
                        "names its group, e.g. '^(.*)_\\d+$' keeps each video of bear_00012-style frames in one split")
    p.add_argument("--val-fraction", type=float, default=option_default("val_fraction"),
                   help="validation share carved out when no val split exists (default %(default)s)")
    p.add_argument("--seed", type=int, default=option_default("seed"))
    p.add_argument("--shard-size", type=parse_size, default=option_default("shard_size"),
                   help="target bytes per shard: 256MiB (the default) or 256MB (10⁶ bytes)")
    p.add_argument("--max-count", type=int, help="at most this many samples per shard")
    p.add_argument("--keep-zero-label", action="store_true",
                   help="ADE20K: keep mask value 0 ('other') as a class instead of ignoring it")
    p.add_argument("--resize-masks", action="store_true", help="resize masks whose size differs (nearest neighbour)")
    p.add_argument("--skip-unpaired", action="store_true", help="leave out files without a partner instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--workers", type=int, default=option_default("workers"), help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    configs.add_config_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = configs.parse(parser, sys.argv[1:] if argv is None else list(argv))
    if args.print_config:
        print(configs.dump(configs.settings(parser, args)), end="")
        return 0
    if args.verify:
        problems = verify(args.verify, progress=not args.quiet)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{args.verify}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    if args.merge:
        merge(args.merge)
        return 0
    if args.out is None and args.src is not None and (args.images or args.masks):
        args.src, args.out = None, args.src  # `fastseg-shard --images I --masks M OUT`
    if args.out is None:
        parser.error("give SRC and OUT (or --images DIR --masks DIR OUT, or --verify OUT)")
    opts = ShardOptions(
        images=args.images, masks=args.masks, classes=args.classes, ignore_value=args.ignore_value,
        val_fraction=args.val_fraction, seed=args.seed, shard_size=args.shard_size, max_count=args.max_count,
        resize_masks=args.resize_masks, keep_zero_label=args.keep_zero_label, skip_unpaired=args.skip_unpaired,
        mask_threshold=args.mask_threshold, pair_key=args.pair_key, group_by=args.group_by,
        part=parse_part(args.part) if args.part else None, store=args.store,
        map_values=parse_value_map(args.map_values) if args.map_values is not None else None,
        overwrite=args.overwrite,
        workers=args.workers, progress=not args.quiet,
    )
    if storage.is_remote(args.src or ""):
        parser.error("SRC must be a local folder; only OUT may be an s3:// prefix")
    shard(args.src or Path("."), args.out, opts)
    return 0


def entry() -> None:
    sys.exit(run_cli("fastseg-shard", main))


if __name__ == "__main__":
    entry()
