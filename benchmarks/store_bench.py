"""Both loaders reading a set from each object store's local server through a proxy that adds a cloud's latency to
every request, beside the same set on disk: epochs 1, 2 and 3 timed one by one (the first, cold, included), clean
and with a share of the ranged GETs failing, through the shard cache and by ranged reads (`cache none`), with the
GETs each epoch made; and once with a cache limit below the split, the cache folder's size sampled all along.

    python benchmarks/store_bench.py --data DIR [--copies 3] [--per-shard 60] [--latency 0.03] [--faults 0.05]
                                     [--json PATH]

The servers (servers.py: moto, and Azurite where installed) share this machine's cores with the loaders. DATA,
linked --copies times, is sharded to disk and to each store, read through faults.py's proxy: `--latency` s before
every request, and in the faulty runs a share of the ranged GETs failing (503, a reset, or half the body, a 3 s
stall and a cut: a third each). Every figure is samples/s of one whole shuffled epoch (torch loader and DALI on
the CPU, batch 8, flip), the first timed from the loader's making, each run with an empty cache. With the peers'
environment, LitData and Mosaic read the same samples from the same bucket too (peer_anchors).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from baselines import linked_copies
from faults import FaultyProxy
from harness import Sampling, provenance, publish, run_child
from peers import FORMATS as PEER_FORMATS
from peers import PEER_PYTHON, convert_peers
from servers import azurite, moto_s3

LOADERS = {"torch": "torch", "dali_cpu": "dali"}
# the runs of each store and loader: (label, share of ranged GETs failing, loader options)
RUNS = (("clean", 0.0, {}), ("faulty", "cache_faults", {}), ("ranged", 0.0, {"cache": "none"}),
        ("ranged_faulty", "faults", {"cache": "none"}))


class FolderSize(Sampling):
    """The largest size the files directly in a folder reached, sampled every 10 ms while it runs."""

    def __init__(self, folder: Path):
        super().__init__(0.01)
        self.folder, self.peak = folder, 0

    def sample(self) -> bool:
        size = 0
        for entry in os.scandir(self.folder) if self.folder.is_dir() else ():
            try:
                size += entry.stat().st_size if entry.is_file() else 0
            except FileNotFoundError:  # evicted while listed
                pass
        self.peak = max(self.peak, size)
        return True


def epochs(shards, backend: str, workers: int, count: int, proxy: FaultyProxy | None = None, **options) -> dict:
    """samples/s and GETs of each of `count` shuffled epochs, the first included and timed from the loader's making
    (its listing, manifest and indexes, and the first shards), and the keys of the first."""
    from fastseg.loading import make_loader

    before, start = proxy.gets if proxy else 0, time.perf_counter()
    loader = make_loader(shards, backend=backend, batch_size=8, augment="flip", shuffle=True, workers=workers,
                         checksums=False, return_keys=True, **options)
    rates, gets, keys = [], [], []
    for epoch in range(count):
        if epoch:
            before, start = proxy.gets if proxy else 0, time.perf_counter()
        samples = 0
        for batch in loader:
            samples += batch["real"]
            if epoch == 0:
                keys += batch["key"][:batch["real"]]
        rates.append(round(samples / (time.perf_counter() - start), 1))
        gets.append(proxy.gets - before if proxy else 0)
    return {"rates": rates, "gets": gets, "keys": keys}


def peer_anchors(disk: Path, url: str, tmp: Path, server, args) -> dict:
    """LitData and MosaicML Streaming reading the same samples from the same bucket through the same proxy (clean,
    each streaming its own format into an empty cache of its own), beside themselves from disk, as loader_bench.py
    runs them (recipe 2: the paired flip, batch 8, shuffled): each epoch's samples/s, the first timed from the
    loader's making, and the GETs of the whole run."""
    from fastseg import storage

    folder = tmp / "peers"
    found = convert_peers(list(PEER_FORMATS), disk, folder, str(args.peer_python), args.workers)
    for path in sorted(p for kind in PEER_FORMATS for p in (folder / kind).rglob("*") if p.is_file()):
        storage.upload(path, storage.join(f"{url}-peers", path.relative_to(folder).as_posix()))
    for kind in PEER_FORMATS:
        runs = found[kind] = {}
        for where, peer_dir in (("disk", folder), ("bucket", f"{url}-peers")):  # the child reads PEER_DIR/KIND
            proxy = FaultyProxy(server.environment[server.endpoint], share=0.0, seed=1, stall=3.0,
                                latency=args.latency) if where == "bucket" else None
            env = {**os.environ, **server.environment, **({server.endpoint: proxy.url} if proxy else {})}
            argv = [str(Path(__file__).with_name("loader_bench.py")), "--child", f"{kind}_r2", "--shards", str(disk),
                    "--peer-dir", str(peer_dir), "--batch-size", "8", "--workers", str(args.workers), "--rounds",
                    str(args.epochs - 1), "--min-seconds", "0"]
            try:
                figures = run_child(argv, python=str(args.peer_python), env=env)[0]
                epochs_run = (figures["cold_epoch"], *figures["rounds"])
                runs[where] = {"rates": [round(r["samples"] / r["seconds"], 1) for r in epochs_run],
                               "gets": proxy.gets if proxy else 0}
            except RuntimeError as err:  # a peer that cannot read the bucket is reported with its error
                runs[where] = {"error": str(err)}
            finally:
                if proxy:
                    proxy.close()
            print(f"{kind} from the {where}: {runs[where]}", flush=True)
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--copies", type=int, default=3, help="DATA linked this many times (a set of a few shards)")
    p.add_argument("--per-shard", type=int, default=60, help="samples a shard (fastseg-shard --max-count)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency", type=float, default=0.03, help="s added to every request (a cloud's first byte)")
    p.add_argument("--faults", type=float, default=0.05, help="the share of ranged GETs failing in the faulty run "
                                                                 "by ranged reads (a GET a sample)")
    p.add_argument("--cache-faults", type=float, default=0.25,
                   help="the same through the cache: a GET a shard's part, so few GETs that 5%% would rarely hit one")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--part-size", default="8MiB", help="the parts a shard is fetched in (FASTSEG_PART_SIZE)")
    p.add_argument("--peer-python", type=Path, default=PEER_PYTHON if PEER_PYTHON.exists() else None,
                   help="the peers' environment (default .peers-venv, where it exists): LitData and Mosaic from the "
                        "same bucket as anchors")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    os.environ["FASTSEG_PART_SIZE"] = args.part_size
    from fastseg.cli import run_cli
    from fastseg.cli.shard import main as shard_main
    from fastseg.sets import open_set

    servers = {"s3": moto_s3()}
    if servers["s3"] is None:
        raise SystemExit("moto's S3 server did not start (pip install 'moto[server]')")
    azure = azurite()  # where it is installed
    if azure:
        servers["az"] = azure
    result = {"data": str(args.data), "copies": args.copies, "part_size": args.part_size, "workers": args.workers,
              "latency_s": args.latency, "faults": args.faults, "cache_faults": args.cache_faults, "epochs": args.epochs,
              "stores": {}, **provenance()}
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="fastseg-stores-") as tmp:
            data = linked_copies(args.data, Path(tmp) / "data", args.copies)
            disk = Path(tmp) / "shards"
            shard_args = ["--val-fraction", "0", "--max-count", str(args.per_shard), "--quiet"]
            run_cli("fastseg-shard", shard_main, [str(data), str(disk), *shard_args])
            split = open_set(disk).manifest.split("train")
            result["set"] = {"samples": split.samples, "shards": len(split.shards),
                             "shard_mb": [round(s.bytes / 1e6, 1) for s in split.shards]}
            # below the split, above what the order and the DataLoader's batches handed out ahead need at once
            limit = 4 * max(s.bytes for s in split.shards)
            if limit >= sum(s.bytes for s in split.shards):
                raise SystemExit(f"{split.samples} samples in {len(split.shards)} shards: too few shards for a cache "
                                 "limit below the split; raise --copies or lower --per-shard")
            on_disk = {name: epochs(disk, backend, args.workers, args.epochs) for name, backend in LOADERS.items()}
            print("disk:", {name: run["rates"] for name, run in on_disk.items()}, flush=True)
            for scheme, server in servers.items():
                environment, endpoint_key = server.environment, server.endpoint
                os.environ.update(environment)
                url = f"{scheme}://sets/bench"
                run_cli("fastseg-shard", shard_main, [str(data), url, *shard_args])
                figures = result["stores"][scheme] = {}
                for name, backend in LOADERS.items():
                    found = figures[name] = {"disk": dict(on_disk[name])}
                    runs = [*RUNS, ("limited", 0.0, {"cache_limit": str(limit)})]
                    for label, share, options in runs:
                        cache = Path(tmp) / f"cache-{scheme}-{name}-{label}"
                        options = {"cache": str(cache), **options}
                        share = getattr(args, share) if isinstance(share, str) else share
                        proxy = FaultyProxy(environment[endpoint_key], share=share,
                                            seed=1, stall=3.0, latency=args.latency)
                        os.environ[endpoint_key] = proxy.url
                        try:
                            with FolderSize(cache / "shards") as size:
                                found[label] = epochs(url, backend, args.workers, args.epochs, proxy, **options)
                        finally:
                            proxy.close()
                            os.environ[endpoint_key] = environment[endpoint_key]
                        found[label].update(faults=len(proxy.faults), cache_peak_mb=round(size.peak / 1e6, 2))
                        if label == "limited":
                            found[label]["cache_limit_mb"] = round(int(options["cache_limit"]) / 1e6, 2)
                        print(f"{scheme} {name} {label}: {found[label]['rates']} samples/s, GETs "
                              f"{found[label]['gets']}", flush=True)
                    for label, _, _ in runs:
                        found[label]["same_keys_as_clean"] = sorted(found[label]["keys"]) == sorted(found["disk"]["keys"])
                    found["faulty"]["same_order_as_clean"] = found["faulty"]["keys"] == found["clean"]["keys"]
                    found["ranged_faulty"]["same_order_as_clean"] = found["ranged_faulty"]["keys"] == \
                        found["ranged"]["keys"]
                    for run in found.values():
                        del run["keys"]
                if scheme == "s3" and args.peer_python:
                    result["peers"] = peer_anchors(disk, url, Path(tmp), server, args)
    finally:
        for server in servers.values():
            server.stop()
    rows += table(result)
    publish(rows, args.json, result, f"Stores: {args.data.name} ×{args.copies}, CPU, {args.workers} workers, "
                                     f"{args.latency * 1000:.0f} ms a request")
    return 0


def table(result: dict) -> list[str]:
    """The results as Markdown: a row a store, loader and run, its epochs' rates, the ratio to disk, the GETs."""
    count = result["epochs"]
    rows = ["| store | loader | run | " + " | ".join(f"epoch {e} samples/s" for e in range(1, count + 1)) +
            " | worst epoch / disk's | GETs per epoch | faults injected |", "|---|---|---|" + "---:|" * (count + 3)]
    runs = [run for loaders in result["stores"].values() for run in loaders.values()]
    for scheme, loaders in result["stores"].items():
        for loader, found in loaders.items():
            disk = found["disk"]["rates"]
            for label, run in found.items():
                worst = min(r / d for r, d in zip(run["rates"], disk))
                rows.append(f"| {scheme} | {loader} | {label} | " + " | ".join(f"{r:.1f}" for r in run["rates"]) +
                            f" | {worst:.2f}× | {' / '.join(map(str, run['gets']))} | {run.get('faults', '')} |")
    for kind, peer_runs in {k: v for k, v in result.get("peers", {}).items() if k in PEER_FORMATS}.items():
        for where, run in peer_runs.items():  # the anchors: each peer from the bucket against itself from disk
            if "error" in run:
                rows.append(f"| s3 | {kind}_r2 | {where} | error: {run['error'][:120]} |" + " |" * (count + 2))
                continue
            disk = peer_runs["disk"].get("rates") or run["rates"]
            worst = min(r / d for r, d in zip(run["rates"], disk))
            rows.append(f"| s3 | {kind}_r2 | {where} | " + " | ".join(f"{r:.1f}" for r in run["rates"]) +
                        f" | {worst:.2f}× | {run['gets']} in all | |")
    s, latency = result["set"], result["latency_s"] * 1000
    same_keys = all(run[label]["same_keys_as_clean"] for run in runs for label in run if label != "disk")
    same_order = all(run[label]["same_order_as_clean"] for run in runs for label in ("faulty", "ranged_faulty"))
    rows += ["", f"{s['samples']} samples in {s['shards']} shards ({', '.join(map(str, s['shard_mb']))} MB); "
             f"{result['workers']} workers, batch 8, flip, shuffled epochs, each run with an empty cache; shards fetched "
             f"in parts of {result['part_size']}. Every request "
             f"to a store waits {latency:.0f} ms at the proxy; the faulty runs fail a share of the ranged GETs (503, "
             f"a reset, or a 3 s stall then a cut): {result['cache_faults']:.0%} through the cache (a GET a part), "
             f"{result['faults']:.0%} by ranged reads (a GET a sample). clean, faulty: through the shard cache; ranged: "
             f"`cache none` (a GET a sample); limited: the cache limited to {runs[0]['limited']['cache_limit_mb']} "
             f"MB, below the split: the folder peaked at {max(run['limited']['cache_peak_mb'] for run in runs)} MB. "
             f"Every run read the disk set's samples: {same_keys}; the faulty runs in the clean runs' order: "
             f"{same_order}." + (" litdata_r2, mosaic_r2: the peers as loader_bench.py runs them (recipe 2), each "
                                 "from its own format in the same bucket through the same proxy, clean, into an empty "
                                 "cache of its own, beside itself from disk; their GETs are the whole run's."
                                 if "peers" in result else "")]
    return rows


if __name__ == "__main__":
    sys.exit(main())
