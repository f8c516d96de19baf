"""What scoring at the labels' resolution costs: one checkpoint scored on one split by every rule, through both
loaders, side by side in one run. Rules: the quick rule (labels resized to the training size), whole images at the
training size with logits resized to each label, whole images at an evaluation scale (aspect kept), and slide
windows at that scale. Each is timed over whole passes after one warm pass (the loader is made once, as
fastseg-train's validation loader is); images/s and the mIoU each gives.

    python benchmarks/eval_bench.py --shards DIR --checkpoint CKPT [--split val] [--eval-size H W]
        [--window H W --stride H W] [--workers N] [--rounds N] [--json PATH]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness import provenance, publish


def rules(eval_size, window, stride) -> dict:
    from fastseg.training import Scoring

    found = {"train size (quick rule)": Scoring(at_labels=False), "labels, whole, training size": Scoring()}
    if eval_size:
        found[f"labels, whole, {eval_size[0]}x{eval_size[1]} kept"] = Scoring(size=eval_size)
        if window:
            found[f"labels, slide {window[0]}x{window[1]}/{stride[0]}, {eval_size[0]}x{eval_size[1]} kept"] = \
                Scoring(size=eval_size, mode="slide", window=window, stride=stride)
    return found


def measure(module, shards, split: str, backend: str, scoring, workers: int, rounds: int) -> dict:
    from fastseg.loading import make_loader
    from fastseg.training import score_loader

    loader = make_loader(shards, split=split, backend=backend, batch_size=8, augment="none", workers=workers,
                         device="cpu", checksums=False, **scoring.loader_options(tuple(module.hparams.image_size)))
    found = score_loader(module, loader, scoring)  # warm: workers and pipeline started, pages cached
    images, rates = loader.plan.samples, []
    for _ in range(rounds):
        start = time.perf_counter()
        score_loader(module, loader, scoring)
        rates.append(images / (time.perf_counter() - start))
    return {"images_per_s": round(statistics.median(rates), 2), "rounds": [round(r, 2) for r in rates],
            "miou": round(found["miou"], 5), "pixels": found["pixels"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch

    from fastseg.cli.predict import load_module

    torch.set_num_threads(args.workers)
    module = load_module(args.checkpoint, "cpu")
    result = {"shards": str(args.shards), "split": args.split, "train_size": list(module.hparams.image_size),
              "workers": args.workers, "rules": {}, **provenance()}
    rows = ["| loader | scoring | images/s | vs quick rule | val mIoU | pixels |", "|---|---|---:|---:|---:|---:|"]
    for backend in ("torch", "dali"):
        quick = None
        for name, scoring in rules(args.eval_size, args.window, args.stride).items():
            found = measure(module, args.shards, args.split, backend, scoring, args.workers, args.rounds)
            result["rules"][f"{backend}: {name}"] = found
            quick = quick or found["images_per_s"]
            rows.append(f"| {backend} | {name} | {found['images_per_s']:.1f} | {found['images_per_s'] / quick:.2f}x |"
                        f" {found['miou']:.4f} | {found['pixels']:,} |")
    publish(rows, args.json, result, f"Validation cost by scoring rule: CPU, {args.shards.name} {args.split}, "
                                     f"{args.workers} workers, model trained at {result['train_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
