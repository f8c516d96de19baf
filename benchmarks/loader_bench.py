"""Loaders side by side on the same samples: the vanilla tutorial recipe, fastseg's DataLoader twin, and the DALI
pipeline on the CPU (and with `mixed` decoding on a GPU, where there is one).

    python benchmarks/loader_bench.py --data DIR --shards DIR [--batch-size 16] [--workers 2] [--size H W]
                                      [--epochs 3] [--json PATH]

--data is the folder the shards were made from; the vanilla recipe reads the very files the train split holds.
With no arguments it generates a synthetic set (fastseg.synthetic) in a temporary folder and shards it.
Each loader runs in its own process, one after the other: one warm-up epoch, then the median of --epochs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import decode_rate, host, publish, run_child  # noqa: E402

LOADERS = ("vanilla", "torch", "dali_cpu", "dali_gpu")


# --- the vanilla recipe, as tutorials teach it ---------------------------------------------------------------
def vanilla_loader(pairs, mean, std, batch_size, workers, size):
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class FolderDataset(Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            image = Image.open(pairs[i][0]).convert("RGB")
            mask = Image.open(pairs[i][1])
            if size:
                image = image.resize((size[1], size[0]), Image.BILINEAR)
                mask = mask.resize((size[1], size[0]), Image.NEAREST)
            image, mask = np.asarray(image, np.float32), np.asarray(mask, np.int64)
            if np.random.rand() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            image = (image - mean) / std
            return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()), "mask": torch.from_numpy(mask.copy())}

    return DataLoader(FolderDataset(), batch_size=batch_size, shuffle=True, num_workers=workers)


def train_pairs(shards: Path) -> list[tuple[str, str]]:
    """(image, mask) source files of the train split, from the json member of each sample."""
    from fastseg.format import load_manifest, parse_index

    pairs = []
    for shard in load_manifest(shards).splits["train"].shards:
        with open(shards / shard.name, "rb") as tar:
            for sample in parse_index((shards / shard.index).read_text(), shard.index):
                _, offset, size, _ = next(m for m in sample if m[0] == "json")
                tar.seek(offset)
                meta = json.loads(tar.read(size))
                pairs.append((meta["image"], meta["mask"]))
    return pairs


def child(args) -> None:
    """Run one loader for a warm-up epoch and --epochs timed ones; print the figures as JSON."""
    import psutil
    import torch

    from fastseg.data import make_loader
    from fastseg.format import load_manifest

    manifest = load_manifest(args.shards)
    pairs = train_pairs(args.shards)
    size = tuple(args.size) if args.size else None
    if args.child == "vanilla":
        loader = vanilla_loader(pairs, np.array(manifest.mean, np.float32), np.array(manifest.std, np.float32),
                                args.batch_size, args.workers, size)
    else:
        backend, device = {"torch": ("torch", "cpu"), "dali_cpu": ("dali", "cpu"), "dali_gpu": ("dali", "cuda")}[args.child]
        loader = make_loader(args.shards, "train", backend, args.batch_size, size, augment=True, device=device,
                             workers=args.workers)
    me = psutil.Process()

    def cpu_seconds():  # this process, its live workers, and workers that have already exited
        import resource

        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        live = sum(sum(p.cpu_times()[:2]) for p in me.children(recursive=True))
        return sum(me.cpu_times()[:2]) + live + done.ru_utime + done.ru_stime

    times, cpu = [], 0.0
    for epoch in range(args.epochs + 1):
        start, cpu_start = time.perf_counter(), cpu_seconds()
        for batch in loader:
            batch["image"].sum()  # touch the output, as a training step would
        if args.child == "dali_gpu":
            torch.cuda.synchronize()
        if epoch:  # the first epoch is the warm-up
            times.append(time.perf_counter() - start)
            cpu += cpu_seconds() - cpu_start
    print(json.dumps({"epoch_seconds": times, "samples": len(pairs), "cpu_seconds": cpu}))


def default_dataset(tmp: Path) -> tuple[Path, Path]:
    from fastseg.shard import Options, shard
    from fastseg.synthetic import generate

    data = generate(tmp / "synthetic", count=160)
    shard(data, tmp / "shards", Options(classes=data / "classes.json", progress=False))
    return data, tmp / "shards"


def report(result: dict, json_path: Path | None) -> None:
    limit = result["decode_limit_samples_per_s"]
    vanilla = result["loaders"]["vanilla"]["samples_per_s"]
    lines = ["| loader | samples/s | MB/s | × vanilla | of limit | CPU use | peak memory |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["loaders"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(f"| {name} | {r['samples_per_s']:.1f} | {r['mb_per_s']:.1f} | {r['samples_per_s'] / vanilla:.2f}× "
                     f"| {r['of_limit']:.0%} | {r['cpu_utilisation']:.0%} | {r['peak_memory_mb']:.0f} MB |")
    lines.append(f"| decode-bound limit ({result['host']['cores']} × single-core Pillow) | {limit:.1f} | | "
                 f"{limit / vanilla:.2f}× | 100% | | |")
    title = (f"Loader benchmark: {result['dataset']}, {result['device_kind']}, batch {result['batch_size']}, output "
             f"{result['size']}, {result['workers']} workers/threads, median of {result['epochs']} epochs after a warm-up")
    publish(lines, json_path, result, title)
    if json_path:
        chart(result, json_path.with_suffix(".png"))


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in result["loaders"].items() if "skipped" not in r]
    rates = [result["loaders"][n]["samples_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=120)
    bars = ax.bar(names, rates, color=["#999999", "#4c72b0", "#55a868", "#c44e52"][: len(names)])
    ax.axhline(result["decode_limit_samples_per_s"], color="black", linestyle="--", linewidth=1)
    ax.text(len(names) - 0.5, result["decode_limit_samples_per_s"], " decode-bound limit", va="bottom", ha="right",
            fontsize=8)
    for bar, rate in zip(bars, rates):
        ax.text(bar.get_x() + bar.get_width() / 2, rate, f"{rate:.0f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("samples / s")
    ax.set_title(f"{result['dataset']}: {result['device_kind']}, {result['host']['cores']} cores, "
                 f"batch {result['batch_size']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path)
    p.add_argument("--shards", type=Path)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=LOADERS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        if args.shards is None:
            if args.data is not None:
                p.error("give --shards with --data (make them with fastseg-shard DATA SHARDS)")
            args.data, args.shards = default_dataset(Path(tmp))
            print(f"no --data/--shards: using a generated synthetic set in {args.data}")
        pairs = train_pairs(args.shards)
        mb = sum(os.path.getsize(i) + os.path.getsize(m) for i, m in pairs) / 1e6
        if args.size is None:
            from fastseg.data import resolve_size
            from fastseg.format import load_manifest

            try:
                args.size = list(resolve_size(load_manifest(args.shards), "train", None))
            except Exception:
                p.error("the train split has images of several sizes: give --size H W")
        rate = decode_rate(pairs)
        import torch

        result = {"dataset": str(args.data), "samples": len(pairs), "batch_size": args.batch_size,
                  "workers": args.workers, "size": args.size, "epochs": args.epochs,
                  "device_kind": "GPU" if torch.cuda.is_available() else "CPU",
                  "decode_single_core_samples_per_s": round(rate, 2),
                  "decode_limit_samples_per_s": round(rate * (os.cpu_count() or 1), 2), "loaders": {},
                  "host": host(), "command": " ".join(["python", *sys.argv])}
        for name in tqdm(args.loaders, desc="loaders", unit="loader"):
            if name == "dali_gpu" and not torch.cuda.is_available():
                result["loaders"][name] = {"skipped": "no CUDA device"}
                continue
            argv = [__file__, "--child", name, "--shards", str(args.shards), "--batch-size", str(args.batch_size),
                    "--workers", str(args.workers), "--epochs", str(args.epochs), "--size", *map(str, args.size)]
            figures, monitor, _ = run_child(argv)
            seconds = statistics.median(figures["epoch_seconds"])
            per_s = figures["samples"] / seconds
            result["loaders"][name] = {
                "samples_per_s": round(per_s, 2), "mb_per_s": round(mb / seconds, 2),
                "epoch_seconds": [round(s, 3) for s in figures["epoch_seconds"]],
                "cpu_utilisation": round(figures["cpu_seconds"] / (sum(figures["epoch_seconds"]) * os.cpu_count()), 3),
                "peak_memory_mb": round(monitor.peak_rss / 1e6, 1),
                "of_limit": round(per_s / result["decode_limit_samples_per_s"], 3),
            }
        vanilla = result["loaders"].get("vanilla", {}).get("samples_per_s")
        for r in result["loaders"].values():
            if vanilla and "samples_per_s" in r:
                r["vs_vanilla"] = round(r["samples_per_s"] / vanilla, 3)
        report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
