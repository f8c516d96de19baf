"""Where the DALI CPU loader's time goes: the pipeline cut after each stage, and the conversion to torch.

    python benchmarks/dali_stages.py --shards DIR [--size H W] [--augment flip|crop] [--threads 2] [--json PATH]

Each stage is its own pipeline (reader → decode → + augment (crop: the crop/flip resize; flip: the mask flip, and
a resize only where the output size differs) → + normalize (which mirrors the image in flip mode)), timed alone;
then the full fastseg loader's per-batch hand-off to torch tensors is timed on its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import host, publish  # noqa: E402

STAGES = ("read", "decode", "augment", "normalize")


def stage_pipeline(plan, stage: str, threads: int):
    from nvidia.dali import fn, pipeline_def, types

    from fastseg.dali_loader import _crop_window, _resize
    from fastseg.format import IMAGE_EXTS, MASK_EXT

    @pipeline_def(batch_size=plan.batch_size, num_threads=threads, device_id=None, seed=0)
    def pipe():
        image, mask = fn.readers.webdataset(paths=plan.shards, index_paths=[str(p) for p in plan.indexes],
                                            ext=[";".join(IMAGE_EXTS), MASK_EXT], pad_last_batch=True)
        if stage == "read":
            return image, mask
        image = fn.decoders.image(image, device="cpu", output_type=types.RGB)
        mask = fn.decoders.image(mask, device="cpu", output_type=types.GRAY)
        if stage == "decode":
            return image, mask
        coin = fn.random.coin_flip()
        if plan.augment == "crop":
            image, mask = _resize(image, mask, plan.size, _crop_window(plan.scale, coin, None))
        else:
            if not plan.native:
                image, mask = _resize(image, mask, plan.size)
            mask = fn.flip(mask, horizontal=coin)
        if stage == "augment":
            return image, mask
        mean, std = plan.mean_std
        image = fn.crop_mirror_normalize(image, mirror=0 if plan.augment == "crop" else coin, mean=mean, std=std,
                                         dtype=types.FLOAT, output_layout="CHW")
        return image, mask

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
    p.add_argument("--augment", choices=("flip", "crop"), default="flip")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=60, help="whole epochs until this many batches have passed")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from fastseg.data import make_loader

    loader = make_loader(args.shards, "train", "dali", args.batch_size, tuple(args.size) if args.size else None,
                         augment=args.augment, device="cpu", workers=args.threads)
    plan = loader.plan
    result = {"shards": str(args.shards), "size": list(plan.size), "augment": args.augment, "threads": args.threads,
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
    result["to_torch_ms_per_batch"] = round(1000 * (time.perf_counter() - start) / 5, 2)
    del outputs
    for _ in loader:  # a warm-up epoch, then whole epochs until --batches have passed
        pass
    # every thread's CPU time over the timed loader run: how many cores the loader really keeps busy
    import psutil

    me = psutil.Process()
    cpu_before = {t.id: t.user_time + t.system_time for t in me.threads()}
    taken, epochs, start = 0, 0, time.perf_counter()
    while taken < args.batches:
        taken += sum(1 for _ in loader)
        epochs += 1
    wall = time.perf_counter() - start
    result["loader_samples_per_s"] = round(epochs * plan.samples / wall, 1)
    busy = sorted(((t.user_time + t.system_time - cpu_before.get(t.id, 0.0)) / wall for t in me.threads()),
                  reverse=True)
    result["loader_thread_cores"] = [round(b, 3) for b in busy if b >= 0.005]
    result["loader_cores"] = round(sum(busy), 3)
    rows = ["| pipeline cut after | samples/s |", "|---|---:|"]
    rows += [f"| {s} | {r:.1f} |" for s, r in result["stages_samples_per_s"].items()]
    rows += [f"| whole fastseg loader (incl. hand-off to torch) | {result['loader_samples_per_s']:.1f} |",
             "", f"Hand-off to torch tensors: {result['to_torch_ms_per_batch']:.2f} ms per batch of {args.batch_size}.",
             "", f"The whole loader kept {result['loader_cores']:.2f} cores busy, by thread (busiest first): "
             + ", ".join(f"{c:.2f}" for c in result["loader_thread_cores"]) + "."]
    publish(rows, args.json, result, f"DALI CPU stages: {args.shards.name}, output {plan.size[0]}x{plan.size[1]}, "
            f"augment {args.augment}, {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
