"""Training throughput (images/s) of the UNet with each loader, and the data-stall fraction: the share of each
step spent waiting for the next batch. On a CPU the model dominates; on a GPU this tells whether input is the
bottleneck.

    python benchmarks/train_bench.py [--shards DIR] [--data DIR] [--size 256 256] [--width 16] [--steps 20]
                                     [--precision 32-true|bf16-mixed|16-mixed] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader_bench import default_dataset, train_pairs, vanilla_loader  # noqa: E402
from measure import host, publish  # noqa: E402

AUTOCAST = {"32-true": None, "bf16-mixed": "bfloat16", "16-mixed": "float16"}


def measure(loader, model, device, steps: int, warmup: int, precision: str) -> dict:
    import torch

    from fastseg.losses import segmentation_loss

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = AUTOCAST[precision]
    scaler = torch.amp.GradScaler(enabled=precision == "16-mixed")
    wait = total = images = 0.0
    batches = iter(())
    for step in range(warmup + steps):
        start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:  # a new epoch
            batches = iter(loader)
            batch = next(batches)
        image = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        got = time.perf_counter()
        with torch.autocast(device.type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None):
            loss = segmentation_loss(model(image), mask)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        if step >= warmup:
            wait, total, images = wait + got - start, total + end - start, images + image.shape[0]
    return {"images_per_s": round(images / total, 2), "data_stall_fraction": round(wait / total, 4),
            "step_ms": round(1000 * total / steps, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path)
    p.add_argument("--data", type=Path, help="(for the record) the folder the shards came from")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default=None, choices=sorted(AUTOCAST))
    p.add_argument("--loaders", nargs="+", default=["vanilla", "torch", "dali"], choices=["vanilla", "torch", "dali"])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch
    from tqdm import tqdm

    from fastseg.data import make_loader
    from fastseg.format import load_manifest
    from fastseg.losses import out_channels
    from fastseg.model import UNet

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision or ("16-mixed" if device.type == "cuda" else "32-true")
    with tempfile.TemporaryDirectory() as tmp:
        if args.shards is None:
            args.data, args.shards = default_dataset(Path(tmp))
        manifest = load_manifest(args.shards)
        result = {"dataset": str(args.data or args.shards), "size": args.size, "width": args.width,
                  "batch_size": args.batch_size, "precision": precision, "steps": args.steps,
                  "device_kind": device.type.upper(), "loaders": {}, "host": host(),
                  "command": " ".join(["python", *sys.argv])}
        for name in tqdm(args.loaders, desc="loaders", unit="loader"):
            if name == "vanilla":
                loader = vanilla_loader(train_pairs(args.shards), np.array(manifest.mean, np.float32),
                                        np.array(manifest.std, np.float32), args.batch_size, args.workers, args.size)
            else:
                loader = make_loader(args.shards, "train", name, args.batch_size, tuple(args.size), augment=True,
                                     device=device, workers=args.workers)
            model = UNet(out_channels(manifest.num_classes), width=args.width).to(device)
            result["loaders"][name] = measure(loader, model, device, args.steps, args.warmup, precision)
            del loader
    rows = ["| loader | images/s | data-stall fraction | step |", "|---|---:|---:|---:|"]
    rows += [f"| {n} | {r['images_per_s']:.1f} | {r['data_stall_fraction']:.1%} | {r['step_ms']:.0f} ms |"
             for n, r in result["loaders"].items()]
    publish(rows, args.json, result, f"Training throughput: {result['device_kind']}, {precision}, UNet width "
            f"{args.width} at {args.size[0]}x{args.size[1]}, batch {args.batch_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
