"""What the full reshuffle costs: each fastseg loader over the train split with shuffle on (a new permutation of
the whole split every epoch; DALI reads it through its feed by offset) and off (the manifest order; DALI's own
webdataset reader streaming the shards, which is what the buffer shuffle of earlier versions read through, its
buffer costing no more than moving sample pointers), side by side in one run; each in its own process, one warm
epoch, then whole epochs timed.

    python benchmarks/shuffle_bench.py --shards DIR [--augment flip] [--workers 2] [--rounds 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from harness import provenance, publish, run_child


def child(args) -> None:
    from fastseg.loading import make_loader

    loader = make_loader(args.shards, split="train", backend=args.backend, batch_size=args.batch_size,
                         augment=args.augment, workers=args.workers, shuffle=args.shuffle == "on", device="cpu",
                         checksums=False)
    for _ in loader:  # warm: workers and pipeline started, pages cached
        pass
    rates = []
    for _ in range(args.rounds):
        start, samples = time.perf_counter(), 0
        for batch in loader:
            samples += batch["real"]
        rates.append(samples / (time.perf_counter() - start))
    print(json.dumps({"rounds": rates}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--augment", default="flip")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--shuffle", choices=("on", "off"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.backend:
        child(args)
        return 0
    result = {"shards": str(args.shards), "augment": args.augment, "batch_size": args.batch_size,
              "workers": args.workers, "loaders": {}, **provenance()}
    rows = ["| loader | shuffle | samples/s | vs manifest order | peak memory |", "|---|---|---:|---:|---:|"]
    for backend in ("dali", "torch"):
        base = None
        for shuffle in ("off", "on"):
            found, monitor, _ = run_child([__file__, "--shards", str(args.shards), "--augment", args.augment,
                                           "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                                           "--rounds", str(args.rounds), "--backend", backend, "--shuffle", shuffle])
            rate = statistics.median(found["rounds"])
            base = base or rate
            result["loaders"][f"{backend} shuffle {shuffle}"] = {
                "samples_per_s": round(rate, 2), "rounds": [round(r, 2) for r in found["rounds"]],
                "vs_manifest_order": round(rate / base, 3), "peak_memory_mb": round(monitor.peak_rss / 1e6, 1)}
            rows.append(f"| {backend} | {shuffle} | {rate:.1f} | {rate / base:.3f} | "
                        f"{monitor.peak_rss / 1e6:.0f} MB |")
    publish(rows, args.json, result, f"Full reshuffle against the manifest order: CPU, {args.shards.name}, "
                                     f"augment {args.augment}, {args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
