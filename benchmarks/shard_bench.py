"""fastseg-shard speed against the decode-bound limit, and its memory against dataset size.

    python benchmarks/shard_bench.py [--data DIR ...] [--workers 2] [--json PATH]

Sharding decodes every image and mask to check them, so its ceiling is workers × the single-core Pillow decode
rate. Memory must not grow with the dataset: each set is also sharded as a quarter of itself, and the peak
resident memory of the whole process tree (workers included) is compared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import decode_rate, provenance, publish, run_child

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def child(src: Path, out: Path, workers: int, store: str = "auto") -> None:
    from fastseg.shards import ShardOptions, shard

    start = time.perf_counter()
    manifest = shard(src, out, ShardOptions(workers=workers, progress=False, val_fraction=0, store=store))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "samples": sum(s.samples for s in manifest.splits.values()),
                      "storage": manifest.storage}))


def encode_rate(pairs, limit: int = 60) -> float:
    """Single-core rate of the per-sample shard work (decode, check, convert, encode), in this process."""
    from fastseg.shards import detect_spec, encode_sample, storage_for

    pairs = pairs[:limit]
    spec = detect_spec([p.mask for p in pairs])
    storage = storage_for("auto", {"train": pairs})  # what fastseg-shard stores by default
    start = time.perf_counter()
    for pair in pairs:
        encode_sample(pair, spec, False, storage)
    return len(pairs) / (time.perf_counter() - start)


def subset(pairs, tmp: Path, count: int) -> Path:
    """A folder of symlinks to the first `count` pairs, in the images/ + masks/ layout."""
    for pair in pairs[:count]:
        for kind, path in (("images", pair.image), ("masks", pair.mask)):
            link = tmp / kind / f"{pair.key}{path.suffix}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return tmp


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", default=[SHARED / "davis2016_subset", SHARED / "camvid/train"])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results/shard_cpu.json")
    p.add_argument("--min-seconds", type=float, default=2.0, help="each timed decode round lasts at least this")
    p.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--store", default="auto", help=argparse.SUPPRESS)  # the child's fastseg-shard --store
    args = p.parse_args()
    if args.child:
        child(*args.child, args.workers, args.store)
        return 0
    from fastseg.shards import find_pairs

    result = {"workers": args.workers, "datasets": {}, **provenance()}
    rows = ["| dataset | samples | samples/s (of limit) | streaming samples/s (of limit) | decode limit | "
            "one core: shard work / decode | peak memory (¼ set → whole set) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for data in args.data:
        pairs = [p for ps in find_pairs(data).splits.values() for p in ps]
        decode = decode_rate([(p.image, p.mask) for p in pairs], min_seconds=args.min_seconds)
        single = decode["samples_per_s"]
        limit = single * args.workers
        encode = encode_rate(pairs)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            peaks, runs = {}, {}
            for label, src in (("quarter", subset(pairs, tmp / "quarter", len(pairs) // 4)), ("whole", data)):
                figures, monitor, _ = run_child([__file__, "--child", str(src), str(tmp / f"out-{label}"),
                                                 "--workers", str(args.workers)])
                peaks[label], runs[label] = monitor.peak_rss / 1e6, figures
            rate = figures["samples"] / figures["seconds"]
            # start-up (pool, mask-kind probe) is fixed; the difference of the two runs is the streaming rate
            steady = ((runs["whole"]["samples"] - runs["quarter"]["samples"])
                      / max(runs["whole"]["seconds"] - runs["quarter"]["seconds"], 1e-9))
        result["datasets"][data.name] = {
            "samples": figures["samples"], "samples_per_s": round(rate, 2),
            "decode_limit_samples_per_s": round(limit, 2), "of_limit": round(rate / limit, 3),
            "decode_single_core_rounds": decode["rounds"],
            "encode_single_core_samples_per_s": round(encode, 2),
            "encode_of_decode_single_core": round(encode / single, 3),
            "steady_samples_per_s": round(steady, 2), "steady_of_limit": round(steady / limit, 3),
            "seconds": round(figures["seconds"], 2),
            "peak_memory_mb": {k: round(v, 1) for k, v in peaks.items()},
        }
        rows.append(f"| {data.name} | {figures['samples']} | {rate:.1f} ({rate / limit:.0%}) | {steady:.1f} "
                    f"({steady / limit:.0%}) | {limit:.1f} | {encode / single:.0%} | "
                    f"{peaks['quarter']:.0f} MB → {peaks['whole']:.0f} MB |")
    publish(rows, args.json, result, f"fastseg-shard: CPU, {args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
