"""Ranged-read throughput of the object-store clients fastseg could use, side by side against one local S3 server
(moto) with the same 16 reader threads: obstore (what fastseg/storage.py uses), fsspec's s3fs, and boto3.

    python benchmarks/ranged_reads.py [--reads 600] [--threads 16] [--size 65536] [--json PATH]

s3fs is read where it imports (it pins its own botocore, so `python benchmarks/suite.py --only ranged_reads` installs
it into a side folder, .side-packages/ranged_reads, and puts that on this script's PYTHONPATH alone).

Each client reads the same seeded list of --size-byte ranges of one 16 MiB object, with --threads threads, after a
warm-up of 32 reads; the figure is reads/s (median of 3 rounds). The server shares the machine's cores: this ranks
the clients' own cost per request, not a cloud's bandwidth.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from harness import provenance, publish
from servers import moto_s3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reads", type=int, default=600)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--size", type=int, default=65536)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    server = moto_s3("reads")
    if server is None:
        raise SystemExit("moto's S3 server did not start (pip install 'moto[server]')")
    endpoint = server.url
    os.environ.update(server.environment)
    try:
        import boto3

        client = boto3.client("s3")
        client.put_object(Bucket="reads", Key="blob", Body=os.urandom(16 << 20))
        rng = random.Random(0)
        offsets = [rng.randrange(0, (16 << 20) - args.size) for _ in range(args.reads)]
        readers = {"obstore": obstore_reader(), "s3fs (fsspec)": s3fs_reader(endpoint), "boto3": boto3_reader()}
        me = psutil.Process()
        result = {"reads": args.reads, "threads": args.threads, "size": args.size, "reads_per_s": {},
                  "client_cpu_ms_per_read": {}, **provenance()}
        for name, read in readers.items():
            if read is None:
                continue
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda o: read(o, args.size), offsets[:32]))
                rates, cpu = [], []
                for _ in range(3):
                    start, used = time.perf_counter(), me.cpu_times()
                    sizes = list(pool.map(lambda o: len(read(o, args.size)), offsets))
                    rates.append(args.reads / (time.perf_counter() - start))
                    after = me.cpu_times()
                    cpu.append(1000 * (after.user + after.system - used.user - used.system) / args.reads)
                    assert set(sizes) == {args.size}
            result["reads_per_s"][name] = round(statistics.median(rates), 1)
            result["client_cpu_ms_per_read"][name] = round(statistics.median(cpu), 3)
    finally:
        server.stop()
    publish(table(result), args.json, result, "Ranged reads by client, CPU, local S3 server")
    return 0


def table(result: dict) -> list[str]:
    """The results as Markdown: a row a client, its rate against obstore's and its CPU per read."""
    best = result["reads_per_s"]["obstore"]
    return ["| client | ranged reads/s | × obstore | the client's CPU ms per read |", "|---|---:|---:|---:|"] + [
        f"| {name} | {rate:.1f} | {rate / best:.2f}× | {result['client_cpu_ms_per_read'][name]:.3f} |"
        for name, rate in result["reads_per_s"].items()] + [
        "", f"{result['reads']} reads of {result['size']} bytes, {result['threads']} threads, one local moto server "
        "(in its own process: the rate is the server's; the CPU is the reading process's own, server excluded)."]


def obstore_reader():
    from fastseg import fetching

    return lambda offset, size: fetching.read_range("s3://reads/blob", offset, size)


def s3fs_reader(endpoint: str):
    try:
        import s3fs
    except ImportError:
        return None
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    return lambda offset, size: fs.cat_file("reads/blob", start=offset, end=offset + size)


def boto3_reader():
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(max_pool_connections=32))
    return lambda offset, size: client.get_object(Bucket="reads", Key="blob",
                                                  Range=f"bytes={offset}-{offset + size - 1}")["Body"].read()


if __name__ == "__main__":
    sys.exit(main())
