"""Does training learn? DAVIS subset at 128x128, UNet width 16, 15 epochs on the CPU: validation mIoU >= 0.80.

    python benchmarks/learning_check.py [--data ../shared/data/davis2016_subset] [--loader dali]

Shards the data into a temporary folder, trains with fastseg-train, and writes
benchmarks/results/learning_davis.json. Exits 1 if the bar is missed.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BAR = 0.80


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/davis2016_subset")
    p.add_argument("--loader", default="dali", choices=("dali", "torch"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--bar", type=float, default=BAR, help=f"the validation mIoU to reach (default {BAR})")
    p.add_argument("--json", type=Path, default=HERE / "results/learning_davis.json")
    args = p.parse_args()

    from fastseg.cli.shard import main as shard
    from fastseg.cli.train import main as train

    with tempfile.TemporaryDirectory() as tmp:
        shards, out = Path(tmp) / "shards", Path(tmp) / "run"
        shard([str(args.data), str(shards), "--quiet"])
        start = time.perf_counter()
        train(["--shards", str(shards), "--out", str(out), "--epochs", str(args.epochs), "--image-size",
               str(args.image_size), "--width", str(args.width), "--batch-size", "16", "--lr", str(args.lr),
               "--loader", args.loader, "--accelerator", "cpu", "--workers", "2"])
        seconds = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
    result = {"dataset": str(args.data.name), "image_size": [args.image_size] * 2, "width": args.width,
              "epochs": args.epochs, "lr": args.lr, "loader": args.loader, "train_seconds": round(seconds, 1),
              "device": f"CPU ({platform.processor() or platform.machine()})", "val_miou": metrics["val_miou"],
              "per_class_iou": metrics["per_class_iou"], "bar": args.bar, "passed": metrics["val_miou"] >= args.bar}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"validation mIoU {metrics['val_miou']:.3f} (bar {args.bar}) in {seconds:.0f} s → {args.json}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
