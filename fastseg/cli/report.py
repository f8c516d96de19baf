"""fastseg-report SHARDS: report.html of any shard set (a folder or an object-store prefix, one written elsewhere or in
parts included): class shares, sizes, random samples with their masks, and the set's warnings."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..storage import location
from . import configs, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastseg-report", description=__doc__)
    p.add_argument("shards", type=location, help="a shard set: a folder, or s3://, gs://, az:// or https:// prefix")
    p.add_argument("--out", type=Path, help="the page to write (default: SHARDS/report.html; for a bucket, "
                                            "./report.html)")
    p.add_argument("--samples", type=int, default=12, help="random samples shown per split (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which samples are shown")
    configs.add_config_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..shards.report import write_report

    args = configs.read(build_parser(), argv)
    if args is None:
        return 0
    out = write_report(args.shards, args.out, samples=max(args.samples, 0), seed=args.seed)
    print(f"wrote {out}")
    return 0


def entry() -> None:
    sys.exit(run_cli("fastseg-report", main))


if __name__ == "__main__":
    entry()
