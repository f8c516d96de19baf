"""Sharding in parts, as N machines would, here as N concurrent processes on this machine: samples/s of the whole
(parts and merge) against one `fastseg-shard` with all the cores, and the merge alone over simulated sets of many
parts (sparse shard files the size of real ones: a merge that read a shard's bytes would show it at once).

    python benchmarks/parts_bench.py [--data DIR] [--parts 1 2 4] [--simulated 10 100 1000] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import provenance, publish

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARD_BYTES = 256 * 1024**2  # a simulated part's shard: the default --shard-size, as a sparse file


def shard_cli(*argv) -> list[str]:
    return [sys.executable, "-m", "fastseg.cli.shard", *map(str, argv), "--quiet"]


def in_parts(data: Path, out: Path, parts: int, cores: int) -> dict:
    """N part processes at once (the cores shared out), then the merge; seconds of each, and of the whole."""
    workers = max(1, cores // parts)
    start = time.perf_counter()
    runs = [subprocess.Popen(shard_cli(data, out, "--part", f"{i}/{parts}", "--workers", workers),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(parts)]
    for run in runs:
        if run.wait() != 0:
            raise RuntimeError(run.stderr.read()[-2000:])
    written = time.perf_counter()
    subprocess.run(shard_cli("--merge", out), check=True, capture_output=True)
    done = time.perf_counter()
    return {"parts": parts, "workers_per_part": workers, "parts_seconds": round(written - start, 2),
            "merge_seconds": round(done - written, 3), "seconds": round(done - start, 2)}


def simulated_records(out: Path, parts: int) -> None:
    """`parts` records as real parts write them (train and val, one shard each), beside sparse shard files."""
    from fastseg.format import part_record_name, shard_name

    out.mkdir(parents=True)
    spec = {"kind": "binary", "names": ["background", "foreground"], "colors": [[0, 0, 0], [255, 255, 255]],
            "ignore_value": None, "fixed": True, "table": None, "table_source": "the value table", "threshold": None}
    for i in range(parts):
        splits = {}
        for split in ("train", "val"):
            name = shard_name(split, 0, (i, parts))
            index = name[: -len(".tar")] + ".idx"
            with open(out / name, "wb") as f:
                f.truncate(SHARD_BYTES)
            (out / index).write_text("v1.2 0\n")
            splits[split] = {"samples": 100, "shards": [{"name": name, "samples": 100, "bytes": SHARD_BYTES,
                                                         "sha256": "0" * 64, "index": index, "index_sha256": None}]}
        stats = {"pixel_hist": [[100] * 256] * 3, "class_hist": {"train": [50, 50] + [0] * 254,
                                                                "val": [5, 5] + [0] * 254},
                 "sizes": {"train": [[854, 480]], "val": [[854, 480]]}}
        record = {"format_version": 1, "part": i, "parts": parts, "fingerprint": "f" * 64, "spec": spec,
                  "splits": splits, "stats": stats}
        (out / part_record_name(i, parts)).write_text(json.dumps(record) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "davis2016_subset")
    p.add_argument("--parts", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--simulated", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results/parts_cpu.json")
    args = p.parse_args()
    from fastseg.shards import find_pairs, merge

    cores = os.cpu_count() or 1
    samples = sum(len(pairs) for pairs in find_pairs(args.data).splits.values())
    result = {"dataset": args.data.name, "samples": samples, "cores": cores, "runs": [], "merge_only": [],
              **provenance()}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(shard_cli(args.data, Path(tmp) / "single", "--workers", cores), check=True, capture_output=True)
        single = time.perf_counter() - start
        for parts in args.parts:
            run = in_parts(args.data, Path(tmp) / f"parts-{parts}", parts, cores)
            run["samples_per_s"] = round(samples / run["seconds"], 1)
            result["runs"].append(run)
        for parts in args.simulated:
            simulated_records(Path(tmp) / f"sim-{parts}", parts)
            start = time.perf_counter()
            merge(Path(tmp) / f"sim-{parts}")
            seconds = time.perf_counter() - start
            result["merge_only"].append({"parts": parts, "seconds": round(seconds, 3),
                                         "ms_per_part": round(1000 * seconds / parts, 3),
                                         "shard_bytes_listed": 2 * parts * SHARD_BYTES})
    result["single_machine"] = {"seconds": round(single, 2), "samples_per_s": round(samples / single, 1)}
    rows = ["| how | processes × workers | parts (s) | merge (s) | whole (s) | samples/s |",
            "|---|---|---:|---:|---:|---:|",
            f"| one fastseg-shard | 1 × {cores} | - | - | {single:.2f} | {samples / single:.1f} |"]
    rows += [f"| {r['parts']} part(s) at once, then --merge | {r['parts']} × {r['workers_per_part']} | "
             f"{r['parts_seconds']:.2f} | {r['merge_seconds']:.3f} | {r['seconds']:.2f} | {r['samples_per_s']:.1f} |"
             for r in result["runs"]]
    rows += ["", "| simulated parts | merge (s) | ms per part | shard bytes listed (sparse, never read) |",
             "|---:|---:|---:|---:|"]
    rows += [f"| {m['parts']} | {m['seconds']:.3f} | {m['ms_per_part']:.3f} | {m['shard_bytes_listed'] / 1e12:.2f} TB |"
             for m in result["merge_only"]]
    publish(rows, args.json, result, f"fastseg-shard in parts: CPU, {args.data.name}, {cores} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
