"""Where the DALI CPU loader's time goes: the pipeline cut after each stage, and the conversion to torch.

    python benchmarks/dali_stages.py --shards DIR [--size H W] [--threads 2] [--json PATH]

Each stage is its own pipeline (reader → decode → + crop/flip resize → + normalize), timed alone; then the full
fastseg loader's per-batch conversion to torch tensors (copy out, masks to int64) is timed on its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import host, publish  # noqa: E402

STAGES = ("read", "decode", "resize", "normalize")


def stage_pipeline(plan, stage: str, threads: int):
    from nvidia.dali import fn, pipeline_def, types

    from fastseg.dali_loader import _augment_window
    from fastseg.format import IMAGE_EXTS, MASK_EXT

    @pipeline_def(batch_size=plan.batch_size, num_threads=threads, device_id=None, seed=0)
    def pipe():
        image, mask = fn.readers.webdataset(paths=[str(p) for p in plan.shards],
                                            index_paths=[str(p.with_suffix(".idx")) for p in plan.shards],
                                            ext=[";".join(IMAGE_EXTS), MASK_EXT], pad_last_batch=True)
        if stage == "read":
            return image, mask
        image = fn.decoders.image(image, device="cpu", output_type=types.RGB)
        mask = fn.decoders.image(mask, device="cpu", output_type=types.GRAY)
        if stage == "decode":
            return image, mask
        start, end = _augment_window(plan.scale, plan.vflip)
        window = dict(size=list(plan.size), roi_start=start, roi_end=end, roi_relative=True)
        image = fn.resize(image, interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.FLOAT, **window)
        mask = fn.resize(mask, interp_type=types.INTERP_NN, **window)
        if stage == "resize":
            return image, mask
        mean, std = plan.mean_std
        return fn.crop_mirror_normalize(image, mean=mean, std=std, dtype=types.FLOAT, output_layout="CHW"), mask

    p = pipe()
    p.build()
    return p


def rate(run, batches: int, batch_size: int) -> float:
    for _ in range(3):
        run()
    start = time.perf_counter()
    for _ in range(batches):
        run()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from fastseg.data import make_loader

    loader = make_loader(args.shards, "train", "dali", args.batch_size, tuple(args.size) if args.size else None,
                         augment=True, device="cpu", workers=args.threads)
    plan = loader.plan
    result = {"shards": str(args.shards), "size": list(plan.size), "threads": args.threads,
              "batch_size": args.batch_size, "stages_samples_per_s": {}, "host": host(),
              "command": " ".join(["python", *sys.argv])}
    for stage in STAGES:
        pipe = stage_pipeline(plan, stage, args.threads)
        result["stages_samples_per_s"][stage] = round(rate(pipe.run, args.batches, args.batch_size), 1)
        del pipe
    outputs = loader.pipe.run()
    start = time.perf_counter()
    for _ in range(5):
        loader._to_torch(outputs, 0, 0)
    result["to_torch_ms_per_batch"] = round(1000 * (time.perf_counter() - start) / 5, 1)
    del outputs
    for _ in loader:  # a warm-up epoch, then whole epochs until --batches have passed
        pass
    taken, epochs, start = 0, 0, time.perf_counter()
    while taken < args.batches:
        taken += sum(1 for _ in loader)
        epochs += 1
    result["loader_samples_per_s"] = round(epochs * plan.samples / (time.perf_counter() - start), 1)
    rows = ["| pipeline cut after | samples/s |", "|---|---:|"]
    rows += [f"| {s} | {r:.1f} |" for s, r in result["stages_samples_per_s"].items()]
    rows += [f"| whole fastseg loader (incl. conversion to torch) | {result['loader_samples_per_s']:.1f} |",
             "", f"Conversion to torch tensors: {result['to_torch_ms_per_batch']:.1f} ms per batch of {args.batch_size}."]
    publish(rows, args.json, result, f"DALI CPU stages: {args.shards.name}, output {plan.size[0]}x{plan.size[1]}, "
            f"{args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
