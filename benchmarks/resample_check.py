"""Whether both loaders hand over the same pixels where they resample, and, given a checkpoint, whether it scores
the same through either: the batches of a split at an output size other than the native one, from both backends
(no augmentation), compared in normalized units; then `fastseg-predict --shards` through each loader.

    python benchmarks/resample_check.py --shards DIR --size H W [--split val] [--checkpoint CKPT] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from harness import provenance, publish


def batch_difference(shards, split: str, size: tuple[int, int]) -> dict:
    import torch

    from fastseg.loading import make_loader

    dali, plain = (torch.cat([b["image"][: b["real"]] for b in make_loader(
        shards, split=split, backend=backend, batch_size=8, size=size, augment="none", workers=1, shuffle=False)])
        for backend in ("dali", "torch"))
    difference = (dali - plain).abs()
    return {"images": dali.shape[0], "mean_abs": round(float(difference.mean()), 5),
            "p99_abs": round(float(difference.flatten().quantile(0.99)), 5), "max_abs": round(float(difference.max()), 5)}


def scores(checkpoint: Path, shards, split: str) -> dict:
    from fastseg.cli import run_cli
    from fastseg.cli.predict import main as predict

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for loader in ("dali", "torch"):
            out = Path(tmp) / loader
            if run_cli("fastseg-predict", predict, ["--checkpoint", str(checkpoint), "--shards", str(shards),
                                                    "--split", split, "--loader", loader, "--workers", "1",
                                                    "--device", "cpu", "--out", str(out)]):
                raise SystemExit(f"fastseg-predict failed through the {loader} loader")
            found[loader] = json.loads((out / "metrics.json").read_text())["val_miou"]
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = {"shards": str(args.shards), "split": args.split, "size": args.size,
              "batches": batch_difference(args.shards, args.split, tuple(args.size)),
              **provenance()}
    b = result["batches"]
    rows = ["| images | mean abs difference | p99 | max |", "|---:|---:|---:|---:|",
            f"| {b['images']} | {b['mean_abs']:.4f} | {b['p99_abs']:.4f} | {b['max_abs']:.4f} |"]
    if args.checkpoint:
        result["val_miou"] = scores(args.checkpoint, args.shards, args.split)
        rows += ["", "| loader | val mIoU |", "|---|---:|"]
        rows += [f"| {loader} | {miou:.5f} |" for loader, miou in result["val_miou"].items()]
    publish(rows, args.json, result, f"Resampling in both loaders: CPU, {args.shards.name}, {args.split} at "
                                     f"{args.size[0]}x{args.size[1]}, normalized units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
