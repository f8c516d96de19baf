"""Where the DALI CPU loader's time goes: the pipeline cut after each stage, and the conversion to torch.

    python benchmarks/dali_stages.py --shards DIR [--size H W] [--augment flip|crop|mmseg] [--threads 2] [--json PATH]

Each stage is the loader's own pipeline cut after it (its public `stop_after` option: reader → decode → + augment
(crop: the crop/flip resize; flip: the mask flip, and a resize only where the output size differs; mmseg: the
window resize, flip and colour steps) → + normalize (the image to float32, mirrored in flip mode; masks still
uint8), timed alone, then the whole pipeline (+ the int64 mask widening); then the loader's per-batch hand-off to
torch tensors is timed on its own. Each stage's cost per sample is the difference of the wall times per sample
(with every thread of the pipeline working), so the costs add up to the whole pipeline's. With crop and mmseg the
CPU feed does the decoding and resampling (the job's CPU executor: fastseg.loading.job_crop, job_mmseg): its steps (the crop chosen from the mask, the
window's region decoded, resampled) are timed alone too, beside decoding whole frames.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness import provenance, publish

STAGES = ("read", "decode", "augment", "normalize", "widen")  # widen: the whole pipeline, nothing cut


def rate(run, batches: int, batch_size: int) -> float:
    for _ in range(3):
        run()
    start = time.perf_counter()
    for _ in range(batches):
        run()
    return batches * batch_size / (time.perf_counter() - start)


def feed_steps(args, config) -> dict[str, float]:
    """The feed's steps for crop or mmseg, cumulative, each timed over the split's samples on a pool of the loader's
    threads: the mask and the crop's choice, + the window's region decoded, + resampling and colour (the feed's
    whole work per sample), and beside them the whole frames decoded as a feed would without windows."""
    from concurrent.futures import ThreadPoolExecutor

    from fastseg.loading import draws, job_for, make_loader, recipe, sample_draws

    table = make_loader(args.shards, backend="torch", batch_size=args.batch_size, size=config.size,
                        augment=config.augment, workers=0, base_size=config.base_size,
                        **({"photometric": config.photometric} if config.augment == "mmseg" else {})).dataset
    samples = list(range(len(table)))
    drawn = {n: sample_draws(table.plan.config, 0, n) for n in samples}
    job = job_for(table.plan.config)

    def chosen(n):  # the mask and the window the crop keeps, with the output shape it is resampled to
        mask = table.mask(n)
        if config.augment == "mmseg":
            labels, window = recipe.crop_geometry(mask, drawn[n], config.base_size, config.size,
                                                  config.cat_max_ratio)
            return window, labels.shape
        x0, y0, x1, y1 = draws.crop_box(drawn[n], mask.shape[1], mask.shape[0])
        return (y0, x0, y1, x1), config.size

    def windowed(n):
        window, out = chosen(n)
        return table.image_window(n, window, out)

    steps = {"mask, and the crop chosen from it": chosen, "+ the window's region decoded": windowed,
             f"+ resampled{' and coloured' if config.augment == 'mmseg' else ''} (the feed's whole work)":
                 lambda n: job.cpu(table, n, drawn[n]),
             "whole frames decoded instead (image and mask; no window)": table.pixels}
    found = {}
    with ThreadPoolExecutor(args.threads) as pool:
        for name, step in steps.items():
            list(pool.map(step, samples[:64]))  # warm: decoders made, pages cached
            start = time.perf_counter()
            list(pool.map(step, samples))
            found[name] = round(len(samples) / (time.perf_counter() - start), 1)
    return found


def whole_frames(args) -> float:
    """DALI's own pipeline cut after decoding whole frames (flip mode at the native size): the reference rate."""
    from fastseg.loading import build_pipeline, make_loader

    plan = make_loader(args.shards, backend="dali", batch_size=args.batch_size, augment="flip", device="cpu",
                       workers=args.threads).plan
    pipe = build_pipeline(plan, stop_after="decode")
    return round(rate(pipe.run, args.batches, args.batch_size), 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--augment", choices=("flip", "crop", "mmseg"), default="flip")
    p.add_argument("--base-size", type=int, nargs=2, metavar=("H", "W"), help="mmseg: the scale resized by the ratio")
    p.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True, help="mmseg: colour steps")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=60, help="whole epochs until this many batches have passed")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from fastseg.loading import make_loader

    loader = make_loader(args.shards, backend="dali", batch_size=args.batch_size,
                         size=tuple(args.size) if args.size else None,
                         augment=args.augment, device="cpu", workers=args.threads,
                         **({"base_size": tuple(args.base_size) if args.base_size else None,
                             "photometric": args.photometric} if args.augment == "mmseg" else {}))
    plan = loader.plan
    result = {"shards": str(args.shards), "size": list(plan.size), "augment": args.augment, "threads": args.threads,
              **({"photometric": args.photometric} if args.augment == "mmseg" else {}),
              "batch_size": args.batch_size, "stages_samples_per_s": {}, **provenance()}
    from fastseg.loading import build_pipeline

    for stage in STAGES:
        pipe = build_pipeline(plan, stop_after=None if stage == "widen" else stage)
        result["stages_samples_per_s"][stage] = round(rate(pipe.run, args.batches, args.batch_size), 1)
        del pipe
    outputs = loader.pipe.run()
    start = time.perf_counter()
    for _ in range(5):
        loader.to_torch(outputs, 0, 0)
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
    if args.augment in ("crop", "mmseg"):  # on the CPU the feed decodes and resamples: its steps, timed alone
        result["feed_steps_samples_per_s"] = feed_steps(args, loader.plan.config)
        result["whole_frames_decode_samples_per_s"] = whole_frames(args)
    rates = result["stages_samples_per_s"]
    walls = [1000 / r for r in rates.values()]
    result["stage_ms_per_sample"] = {s: round(w - (walls[i - 1] if i else 0.0), 3) for i, (s, w) in
                                     enumerate(zip(rates, walls))}
    result["loader_of_decode_cut"] = round(result["loader_samples_per_s"] / rates["decode"], 3)
    labels = {"widen": "widen (masks to int64: the whole pipeline)"}
    rows = ["| pipeline cut after | samples/s | this stage's wall ms per sample |", "|---|---:|---:|"]
    rows += [f"| {labels.get(s, s)} | {r:.1f} | {result['stage_ms_per_sample'][s]:.3f} |" for s, r in rates.items()]
    rows += [f"| whole fastseg loader (incl. hand-off to torch) | {result['loader_samples_per_s']:.1f} | "
             f"{1000 / result['loader_samples_per_s'] - walls[-1]:.3f} |", "",
             f"The whole loader runs at {result['loader_of_decode_cut']:.2f} of the pipeline cut after decode.",
             "", f"Hand-off to torch tensors: {result['to_torch_ms_per_batch']:.2f} ms per batch of {args.batch_size}.",
             "", f"The whole loader kept {result['loader_cores']:.2f} cores busy, by thread (busiest first): "
             + ", ".join(f"{c:.2f}" for c in result["loader_thread_cores"]) + "."]
    if "feed_steps_samples_per_s" in result:  # the feed's own steps first: where a feed mode's time goes
        reference = result["whole_frames_decode_samples_per_s"]
        result["loader_of_whole_frames_decode"] = round(result["loader_samples_per_s"] / reference, 3)
        rows = ["On the CPU, crop and mmseg run in DALI's feed (their jobs' CPU executors, on the loader's threads), so "
                "the pipeline cut after `read` below already holds the feed's whole work. The feed's steps, each "
                f"timed alone on {args.threads} threads over the same samples (cumulative):", "",
                "| feed steps | samples/s |", "|---|---:|"] + [
            f"| {name} | {rate:.1f} |" for name, rate in result["feed_steps_samples_per_s"].items()] + [
            "", f"Decoding whole frames alone (image and mask: DALI's pipeline cut after decode, flip mode, the same "
                f"threads): {reference:.1f} samples/s; the whole loader runs at "
                f"**{result['loader_of_whole_frames_decode']:.2f}** of it.", "", *rows]
    publish(rows, args.json, result, f"DALI CPU stages: {args.shards.name}, output {plan.size[0]}x{plan.size[1]}, "
            f"augment {args.augment}, {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
