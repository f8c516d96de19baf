"""Where the torch loader's time goes: each stage of one sample's way timed alone on one core, then the whole loader
with its workers, with and without PyTorch's huge-page allocation (THP_MEM_ALLOC_ENABLE=1).

    python benchmarks/torch_stages.py --shards DIR [--workers 2] [--json PATH]

The stages, in a worker: read the members by offset, decode the JPEG (simplejpeg, as the loader does, beside
Pillow's decode and copy out, as it did before) or the PNG, or for a raw image (fastseg-shard --store raw or auto)
its view and copy, decode the mask PNG (Pillow) or view a raw one, the whole sample as the loader's dataset yields
it (decode, flip), and the collate's stack of a batch. In the main process on the CPU device: the
batch normalized to float32 into a fresh tensor (as the loader did before), the same into a reused buffer (as it
does now, HostBuffers: the memory's first-touch cost taken out), and the int64 widening of the masks.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from harness import provenance, publish, run_child


def per_sample_ms(work, samples: int, repeats: int = 5) -> float:
    """The best of `repeats` passes of `work()`, which handles `samples` samples, in ms per sample."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / samples


def stages(shards: Path, batch_size: int) -> dict:
    import torch
    from PIL import Image

    from fastseg.loading import decode_image, make_loader, member_pixels

    torch.set_num_threads(1)  # one core, as a DataLoader worker has
    loader = make_loader(shards, backend="torch", batch_size=batch_size, augment="flip", workers=0)
    dataset, stored = loader.dataset, loader.plan.stored
    count = min(len(dataset), 64)
    picks = [(path, members) for path, _, members in dataset.members[:count]]
    image_ext = stored.image_in(picks[0][1])
    blobs = [(dataset.read(path, m[image_ext]), dataset.read(path, m[stored.mask]),
              dataset.read(path, m[stored.size]) if stored.size else None) for path, m in picks]
    samples = [dataset[(i, 0)] for i in range(count)]
    batch = torch.stack([s[0] for s in samples[:batch_size]])
    masks = torch.stack([s[1] for s in samples[:batch_size]])
    mean = torch.tensor(loader.plan.mean_std[0], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(loader.plan.mean_std[1], dtype=torch.float32).view(1, 3, 1, 1)
    reused, reused_masks = torch.empty(batch.shape), torch.empty(masks.shape, dtype=torch.int64)
    stacks = max(1, count // batch_size)
    if stored.raw_image:
        image_stages = {"worker: raw image, viewed and copied (the loader's)": per_sample_ms(
            lambda: [member_pixels(i, s, 3) for i, _, s in blobs], count)}
    else:
        kind = "JPEG" if image_ext == "image.jpg" else "PNG"
        image_stages = {
            f"worker: {kind} decode, Pillow + copy out": per_sample_ms(
                lambda: [np.asarray(Image.open(io.BytesIO(i)).convert("RGB")) for i, _, _ in blobs], count),
            f"worker: {kind} decode, the loader's ({'simplejpeg' if kind == 'JPEG' else 'Pillow'})": per_sample_ms(
                lambda: [decode_image(i) for i, _, _ in blobs], count)}
    mask_stage = ("worker: raw mask, viewed and copied" if stored.raw_mask else "worker: mask PNG decode, Pillow")
    figures = {
        "worker: read members by offset": per_sample_ms(
            lambda: [dataset.read(path, m[image_ext]) + dataset.read(path, m[stored.mask]) for path, m in picks],
            count),
        **image_stages,
        mask_stage: per_sample_ms(lambda: [member_pixels(m, stored.raw_mask and s, 1) for _, m, s in blobs], count),
        "worker: whole sample (read, decode, flip)": per_sample_ms(lambda: [dataset[(i, 0)] for i in range(count)],
                                                                   count),
        "worker: stack into a batch": per_sample_ms(
            lambda: [torch.stack([s[0] for s in samples[:batch_size]]) for _ in range(stacks)], stacks * batch_size),
        "main: normalize to float32, fresh output": per_sample_ms(
            lambda: [batch.float().sub_(mean).div_(std) for _ in range(stacks)], stacks * batch_size),
        "main: normalize to float32, reused buffer (the loader's HostBuffers)": per_sample_ms(
            lambda: [reused.copy_(batch).sub_(mean).div_(std) for _ in range(stacks)], stacks * batch_size),
        "main: masks widened to int64, reused buffer": per_sample_ms(
            lambda: [reused_masks.copy_(masks) for _ in range(stacks)], stacks * batch_size),
    }
    return {name: round(ms, 3) for name, ms in figures.items()}


def loader_rate(shards: Path, batch_size: int, workers: int, seconds: float = 8.0) -> dict:
    """The whole loader (workers + main process), samples/s over whole epochs after a warm-up epoch."""
    from fastseg.loading import make_loader

    loader = make_loader(shards, backend="torch", batch_size=batch_size, augment="flip", workers=workers)
    for _ in loader:
        pass
    start, samples = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for batch in loader:
            batch["image"].sum()
            samples += batch["real"]
    return {"samples_per_s": round(samples / (time.perf_counter() - start), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count()],
                   help="the whole loader's worker counts (the huge-page run uses the last)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds of the whole loader (default 8)")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(loader_rate(args.shards, args.batch_size, args.workers[0], args.seconds)))
        return 0
    result = {"shards": str(args.shards), "batch_size": args.batch_size, "workers": args.workers,
              "stages_ms_per_sample": stages(args.shards, args.batch_size), "loader": {}, **provenance()}
    runs = [(f"{w} workers, default allocation", w, None) for w in args.workers]
    runs.append((f"{args.workers[-1]} workers, THP_MEM_ALLOC_ENABLE=1", args.workers[-1], "1"))
    for label, workers, thp in runs:
        argv = [__file__, "--child", "--shards", str(args.shards), "--workers", str(workers),
                "--batch-size", str(args.batch_size), "--seconds", str(args.seconds)]
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        if thp:
            env["THP_MEM_ALLOC_ENABLE"] = thp
        result["loader"][label] = run_child(argv, env=env)[0]
    rows = ["| stage (one core) | ms per sample | samples/s alone |", "|---|---:|---:|"]
    rows += [f"| {name} | {ms:.2f} | {1000 / ms:.0f} |" for name, ms in result["stages_ms_per_sample"].items()]
    rows += ["", "| whole torch loader, CPU device | samples/s |", "|---|---:|"]
    rows += [f"| {label} | {r['samples_per_s']:.1f} |" for label, r in result["loader"].items()]
    publish(rows, args.json, result, f"torch loader stages: {args.shards.name}, flip, batch {args.batch_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
