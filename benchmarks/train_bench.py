"""Training throughput (images/s) of the UNet with each loader, the data stall (the share of the training time
spent waiting for the next batch) and the MFU where the GPU's peak is known, measured two ways side by side:

- `plain`: a bare PyTorch loop (forward, loss, backward, AdamW) with fastseg-train's fast settings: channels-last
  and fused AdamW on CUDA, cudnn autotuning, no host-device sync inside the step;
- `fastseg-train`: the real command (SegModule, SegDataModule and the Lightning Trainer) for about the same number
  of steps, read from its own meter (metrics.json), as users get it.

On a GPU the DALI loader is also run at batch sizes 16, 32 and 64 (where memory allows), to show where the model
saturates the chip. The vanilla tutorial DataLoader runs in the plain loop only (fastseg-train reads shards).

    python benchmarks/train_bench.py [--shards DIR] [--data DIR] [--size 256 256] [--width 16] [--steps 20]
                                     [--precision 32-true|bf16-mixed|16-mixed] [--sweep 16 32 64] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import provenance, publish
from baselines import default_dataset, train_pairs, vanilla_loader

from fastseg.training import PRECISION_DTYPES


def plain_loop(loader, model, device, steps: int, warmup: int, precision: str, flops: int, peak) -> dict:
    """Images/s and data stall over `steps` steps after `warmup`; the GPU is synchronized only around the timed
    window, as fastseg-train's meter does, so the host may run ahead of the GPU as it does in training."""
    import torch

    from fastseg.training import segmentation_loss

    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True if cuda else None)
    dtype = PRECISION_DTYPES[precision]
    scaler = torch.amp.GradScaler(enabled=precision == "16-mixed")
    wait = images = 0.0
    batches = iter(())
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            start, wait, images = time.perf_counter(), 0.0, 0
        fetch = time.perf_counter()
        batch = next(batches, None)
        if batch is None:  # a new epoch
            batches = iter(loader)
            batch = next(batches)
        image = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        if cuda:  # fastseg's loaders hand it over channels-last already (a no-op); the vanilla batch is copied
            image = image.contiguous(memory_format=torch.channels_last)
        wait += time.perf_counter() - fetch
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = segmentation_loss(model(image), mask)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        images += batch.get("real", image.shape[0])  # fastseg's loaders pad the last batch: count real samples
    if cuda:
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    return figures(images, total, wait / total, steps, flops, peak)


def figures(images: float, seconds: float, stall: float, steps: int, flops: int, peak) -> dict:
    rate = images / seconds
    return {"images_per_s": round(rate, 2), "data_stall_fraction": round(stall, 4),
            "step_ms": round(1000 * seconds / steps, 1), "mfu": round(flops * rate / peak, 4) if peak else None}


def fastseg_train(shards: Path, loader: str, args, batch_size: int, out: Path) -> dict:
    """The real fastseg-train for a warm-up epoch and enough epochs for --steps steps; its meter's figures."""
    from fastseg.cli import run_cli
    from fastseg.cli.train import main as train_main
    from fastseg.sets import load_manifest

    per_epoch = math.ceil(load_manifest(shards).splits["train"].samples / batch_size)
    epochs = 1 + math.ceil(args.steps / per_epoch)
    argv = ["--shards", str(shards), "--out", str(out), "--loader", loader, "--epochs", str(epochs),
            "--batch-size", str(batch_size), "--image-size", *map(str, args.size), "--width", str(args.width),
            "--workers", str(args.workers), "--precision", args.precision, "--no-checksums"]
    if run_cli("fastseg-train", train_main, argv) != 0:
        raise RuntimeError(f"fastseg-train {' '.join(argv)} failed")
    meter = json.loads((out / "metrics.json").read_text())["throughput"]
    steps = sum(e["steps"] for e in meter["per_epoch"][1:])
    return {"images_per_s": meter["images_per_s"], "data_stall_fraction": meter["data_stall"],
            "step_ms": meter["step_ms"], "mfu": meter["mfu"], "steps": steps, "epochs_measured": len(meter["epochs_measured"])}


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
    p.add_argument("--precision", default=None, choices=sorted(PRECISION_DTYPES))
    p.add_argument("--loaders", nargs="+", default=["vanilla", "torch", "dali"], choices=["vanilla", "torch", "dali"])
    p.add_argument("--paths", nargs="+", default=["plain", "fastseg-train"], choices=["plain", "fastseg-train"])
    p.add_argument("--sweep", type=int, nargs="*", help="batch sizes for the DALI loader (GPU default: 16 32 64)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch
    from tqdm import tqdm

    from fastseg.sets import load_manifest
    from fastseg.loading import make_loader
    from fastseg.training import UNet, flops_per_image, out_channels, peak_flops

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    args.precision = args.precision or ("16-mixed" if device.type == "cuda" else "32-true")
    sweep = args.sweep if args.sweep is not None else ([16, 32, 64] if device.type == "cuda" else [])
    with tempfile.TemporaryDirectory() as tmp:
        if args.shards is None:
            args.data, args.shards = default_dataset(Path(tmp))
        manifest = load_manifest(args.shards)
        classes = out_channels(manifest.num_classes)
        flops = flops_per_image(classes, args.width, tuple(args.size))
        peak = peak_flops(device, args.precision)
        result = {"dataset": str(args.data or args.shards), "size": args.size, "width": args.width,
                  "batch_size": args.batch_size, "precision": args.precision, "steps": args.steps,
                  "workers": args.workers, "device_kind": device.type.upper(), "flops_per_image": flops,
                  "peak_flops": peak, "runs": [], **provenance()}
        jobs = [(args.batch_size, name, path) for name in args.loaders for path in args.paths
                if not (name == "vanilla" and path == "fastseg-train")]
        jobs += [(b, "dali", path) for b in sweep if b != args.batch_size for path in args.paths]
        for batch_size, name, path in tqdm(jobs, desc="train runs", unit="run"):
            row = {"loader": name, "path": path, "batch_size": batch_size}
            try:
                if path == "fastseg-train":
                    row.update(fastseg_train(args.shards, name, args, batch_size, Path(tmp) / f"run-{len(result['runs'])}"))
                else:
                    if name == "vanilla":
                        loader = vanilla_loader(train_pairs(args.shards), np.array(manifest.mean, np.float32),
                                                np.array(manifest.std, np.float32), batch_size, args.workers,
                                                args.size)
                    else:
                        loader = make_loader(args.shards, backend=name, batch_size=batch_size, size=tuple(args.size),
                                             augment="flip", device=device, workers=args.workers,
                                             channels_last=device.type == "cuda")
                    model = UNet(classes, width=args.width).to(device)
                    if device.type == "cuda":
                        model = model.to(memory_format=torch.channels_last)
                    row.update(plain_loop(loader, model, device, args.steps, args.warmup, args.precision, flops, peak))
                    del loader, model
            except torch.cuda.OutOfMemoryError:
                row["skipped"] = "out of GPU memory"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            result["runs"].append(row)
            if args.json:  # as it goes: a run cut short by a time box still leaves what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    rows = ["| loader | path | batch | images/s | data stall | step | MFU |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        if "skipped" in r:
            rows.append(f"| {r['loader']} | {r['path']} | {r['batch_size']} | skipped: {r['skipped']} | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        rows.append(f"| {r['loader']} | {r['path']} | {r['batch_size']} | {r['images_per_s']:.1f} | "
                    f"{r['data_stall_fraction']:.1%} | {r['step_ms']:.0f} ms | {mfu} |")
    publish(rows, args.json, result, f"Training throughput: {result['device_kind']}, {args.precision}, UNet width "
            f"{args.width} at {args.size[0]}x{args.size[1]}, {args.workers} workers, {flops / 1e9:.1f} GFLOP per image "
            "(forward + backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
