"""Both loaders reading a set from each object store's local server, beside the same set on disk, clean and with a
share of member reads failing transiently.

    python benchmarks/store_bench.py --data DIR [--workers 2] [--faults 0.05] [--epochs 3] [--json PATH]

The servers are started here: moto's S3 server, and Azurite (Azure Blob Storage) where it is installed (.ci/run
puts it in .ci/node). DATA is sharded to disk and to each store with fastseg-shard. Each store is read through
benchmarks/faults.py's proxy: once passing everything (clean, so the proxy's own cost is in both figures) and
once failing --faults of the ranged GETs (503, a reset, a stall past the read timeout then a cut). The figures are
samples/s of whole shuffled epochs after a warm-up epoch (median), for the torch loader and DALI on the CPU, and the
ratios: store/disk and faulty/clean. The servers share this machine's cores with the loaders: the store figures are
those of a local server, not of a cloud bucket.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faults import FaultyProxy
from harness import host, publish

LOADERS = {"torch": "torch", "dali_cpu": "dali"}
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def started(argv: list[str], port: int, env=None) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{argv[0]} did not start")


def s3_server() -> tuple[subprocess.Popen, dict[str, str], str]:
    """moto's S3 server with the bucket `sets`; the environment that points the stores at it."""
    port = free_port()
    proc = started([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port)
    environment = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    import boto3

    boto3.client("s3", endpoint_url=environment["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="sets")
    return proc, environment, "AWS_ENDPOINT_URL"


def azure_server() -> tuple[subprocess.Popen, dict[str, str], str] | None:
    binary = Path(__file__).parents[1] / ".ci/node/node_modules/.bin/azurite-blob"
    if not binary.exists():
        return None
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    proc = started([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                    "--skipApiVersionCheck", "--silent"], port)
    url = f"http://127.0.0.1:{port}"
    BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={url}/devstoreaccount1;").create_container("sets")
    return proc, {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url}, "AZURITE_BLOB_STORAGE_URL"


def rate(shards, backend: str, workers: int, epochs: int) -> float:
    """Median samples/s of `epochs` whole shuffled epochs after a warm-up one."""
    from fastseg.loading import make_loader

    loader = make_loader(shards, backend=backend, batch_size=8, augment="flip", shuffle=True, workers=workers,
                         checksums=False)
    for _ in loader:
        pass
    rates = []
    for _ in range(epochs):
        start, samples = time.perf_counter(), 0
        for batch in loader:
            samples += batch["real"]
        rates.append(samples / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--faults", type=float, default=0.05, help="the share of member reads that fail transiently")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from fastseg import storage
    from fastseg.cli import run_cli
    from fastseg.cli.shard import main as shard_main

    servers = {"s3": s3_server()}
    azure = azure_server()
    if azure:
        servers["az"] = azure
    result = {"data": str(args.data), "workers": args.workers, "faults": args.faults, "stores": {}, "host": host(),
              "command": " ".join(["python", *sys.argv])}
    rows = ["| store | loader | disk samples/s | store clean | store / disk | with faults | faulty / clean | "
            "faults / requests |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    try:
        with tempfile.TemporaryDirectory(prefix="fastseg-stores-") as tmp:
            disk = Path(tmp) / "shards"
            run_cli("fastseg-shard", shard_main, [str(args.data), str(disk), "--val-fraction", "0", "--quiet"])
            on_disk = {name: rate(disk, backend, args.workers, args.epochs) for name, backend in LOADERS.items()}
            for scheme, (_, environment, endpoint_key) in servers.items():
                os.environ.update(environment)
                url = f"{scheme}://sets/bench"
                run_cli("fastseg-shard", shard_main, [str(args.data), url, "--val-fraction", "0", "--quiet"])
                figures = result["stores"][scheme] = {}
                for name, backend in LOADERS.items():
                    found = {}
                    for label, share in (("clean", 0.0), ("faulty", args.faults)):
                        proxy = FaultyProxy(environment[endpoint_key], share=share, seed=1, stall=1.0)
                        os.environ[endpoint_key] = proxy.url
                        storage.READ_TIMEOUT = 0.5  # a stall costs half a second (10 s by default)
                        try:
                            found[label] = rate(url, backend, args.workers, args.epochs)
                        finally:
                            proxy.close()
                            os.environ[endpoint_key] = environment[endpoint_key]
                        found[f"{label}_faults"], found[f"{label}_requests"] = len(proxy.faults), proxy.requests
                    figures[name] = {"disk": round(on_disk[name], 1), "clean": round(found["clean"], 1),
                                     "faulty": round(found["faulty"], 1), "faults": found["faulty_faults"],
                                     "requests": found["faulty_requests"]}
                    f = figures[name]
                    rows.append(f"| {scheme} | {name} | {f['disk']:.1f} | {f['clean']:.1f} | "
                                f"{f['clean'] / f['disk']:.2f}× | {f['faulty']:.1f} | {f['faulty'] / f['clean']:.2f}× | "
                                f"{f['faults']} / {f['requests']} |")
    finally:
        for proc, _, _ in servers.values():
            proc.kill()
    rows += ["", f"{args.workers} workers, batch 8, flip, shuffled epochs; the stores are local servers (moto for "
             "S3, Azurite for Azure) on this machine, read through a proxy that passes everything (clean) or fails "
             f"{args.faults:.0%} of the ranged GETs (faults / requests: what it injected over the faulty run)."
             + ("" if azure else " Azurite is not installed here: Azure not measured.")]
    publish(rows, args.json, result, f"Stores: {args.data.name}, CPU, {args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
