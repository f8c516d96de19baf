"""fastseg-shard SRC OUT: image/mask folders → WebDataset shards, DALI indexes and a manifest."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import storage
from ..settings import from_args
from ..shards import ShardOptions, merge, parse_part, shard, verify
from ..storage import location
from . import configs, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastseg-shard", description=__doc__)
    p.add_argument("src", type=location, nargs="?",
                   help="data folder: images/ + masks/, train/val/test splits, trainA/trainB, or Pascal VOC 2012, "
                        "Cityscapes, ADE20K, CamVid (SegNet), DRIVE, Carvana or Oxford-IIIT Pet as they ship")
    p.add_argument("out", type=location, nargs="?",
                   help="output folder (or s3://, gs:// or az:// bucket/prefix) for shards and manifest.json")
    p.add_argument("--verify", type=location, metavar="OUT", help="re-check an existing shard set (folder or "
                   "object-store prefix) and exit")
    p.add_argument("--part", metavar="I/N",
                   help="write part I of N (counted from 0) of the set, on one of N machines; 'auto' reads a SLURM job "
                        "array's task id and count; then --merge OUT")
    p.add_argument("--merge", type=location, metavar="OUT",
                   help="write the one manifest of a set written with --part, once all its parts are there, and exit")
    configs.add_options(p, ShardOptions)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    configs.add_config_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = configs.read(parser, argv)
    if args is None:
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
    opts = from_args(ShardOptions, args, part=parse_part(args.part) if args.part else None, progress=not args.quiet)
    src = storage.at(args.src or Path(".")).local(
        f"SRC {args.src}: sets are written from a local (or mounted) folder; only OUT may be in an object store "
        "(s3://, gs://, az://)")
    shard(src, args.out, opts)
    return 0


def entry() -> None:
    sys.exit(run_cli("fastseg-shard", main))


if __name__ == "__main__":
    entry()
