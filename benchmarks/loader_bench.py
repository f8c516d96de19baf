"""Loaders side by side on the same samples, doing the same work: the vanilla tutorial DataLoader, fastseg's
torch loader (a DataLoader), and the DALI pipeline on the CPU (and, where there is a GPU, DALI with `mixed`
decoding and the torch loader normalizing on the GPU).

    python benchmarks/loader_bench.py --data DIR --shards DIR [--augment flip|crop|mmseg] [--workers 1 2 ...]
                                      [--loaders vanilla torch dali_cpu ...] [--batch-size 16] [--size H W]
                                      [--rounds 3] [--min-seconds 2] [--json PATH]

--data is the folder the shards were made from; the vanilla recipe reads the very files the train split holds.
With no arguments it generates a synthetic set (fastseg.shards.synthetic) in a temporary folder and shards it.
--augment flip: every loader flips image and mask together and normalizes, at the output size (no resampling at
the native size). --augment crop: every loader, vanilla included (with Pillow), does the same random scale-crop,
resize and flip. --augment mmseg (with --size, the crop, and --base-size): MMSegmentation's recipe (random resize,
padded crop with cat_max_ratio, flip, photometric distortion), vanilla with Pillow as its transforms do it (the whole
image resized, then cropped), albumentations_r1/_r2 with its transforms, fastseg's loaders as augment="mmseg".
Each loader runs in its own process, one after the other, for each worker count: one warm-up
epoch, then --rounds timed rounds of whole epochs, each lasting at least --min-seconds (small splits are
repeated); the figure is the median round. The warm-up epoch is also reported on its own as the cold first epoch:
the loader's files (its own format, the shards, or the source files) dropped from the page cache first, timed from
building the loader, worker start included.

With --augment crop or mmseg, torch_full, dali_cpu_full and dali_gpu_full are fastseg's loaders decoding whole
images (window_decode=False) where the plain names decode only the region each crop keeps.

Peers (benchmarks/peers.py, in the environment `--peer-python` names): LOADERS below; every figure also has its
ratio to the best peer's. Where images are resampled every loader does the same work (RESAMPLING below).
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

import peers
from charts import MAX_BARS, loader_chart
from harness import decode_rate, provenance, publish, run_child
from peers import PeerEpochs, convert_peers, webdataset_loader
from baselines import default_dataset, train_pairs, vanilla_loader

from fastseg.storage import at, join, location

# name -> (backend, device); vanilla is the tutorial DataLoader (baselines.vanilla_loader)
LOADERS = {"vanilla": (None, "cpu"), "torch": ("torch", "cpu"), "torch_gpu": ("torch", "cuda"),
           "dali_cpu": ("dali", "cpu"), "dali_gpu": ("dali", "cuda"),
           # crop or mmseg: decoding whole images (window_decode=False); then the peers (peers.py), recipes 1 and 2
           "torch_full": ("torch", "cpu"), "dali_cpu_full": ("dali", "cpu"), "dali_gpu_full": ("dali", "cuda"),
           "webdataset_r1": ("webdataset", "cpu"), "webdataset_r2": ("webdataset", "cpu"),
           "litdata_r1": ("litdata", "cpu"), "litdata_r2": ("litdata", "cpu"),
           "mosaic_r1": ("mosaic", "cpu"), "mosaic_r2": ("mosaic", "cpu"),  # albumentations: --augment mmseg only
           "albumentations_r1": ("albumentations", "cpu"), "albumentations_r2": ("albumentations", "cpu"),
           # on a GPU, recipe 2 with the batch moved (pinned, non-blocking) and normalized there, as timm's loader does
           "webdataset_gpu": ("webdataset", "cuda"), "litdata_gpu": ("litdata", "cuda"), "mosaic_gpu": ("mosaic", "cuda")}
PEER_FORMATS = peers.FORMATS  # converted once per benchmark run, before any loader runs
PEERS = ("webdataset", "albumentations", *PEER_FORMATS)
DEFAULT_LOADERS = ["vanilla", "torch", "torch_gpu", "dali_cpu", "dali_gpu"]


RESAMPLING = ("crop, or an output size other than the native one: bilinear, antialiased when shrinking, in every "
              "loader (Pillow's in vanilla and torch, DALI's antialias=True); at the native size with flip, no loader "
              "resamples")


def evict_from_page_cache(paths) -> None:
    """Drop these files' cached pages (posix_fadvise DONTNEED: no root needed; pages mapped elsewhere stay)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child(args) -> None:
    """Run one loader: a warm-up epoch, then --rounds rounds of whole epochs of at least --min-seconds each; print
    the figures as JSON."""
    import psutil
    import torch

    from fastseg.sets import load_manifest
    from fastseg.loading import make_loader

    manifest = load_manifest(args.shards)
    pairs = train_pairs(args.shards)
    size = tuple(args.size) if args.size else None
    backend, device = LOADERS[args.child]
    mean, std = np.array(manifest.mean, np.float32), np.array(manifest.std, np.float32)
    recipe = 1 if args.child.endswith("_r1") else 2
    # the first epoch is cold: this loader's files out of the page cache (each peer's own format, or the shards, or
    # the source files), timed from building the loader, workers' start included
    peer_folder = None
    if backend in PEER_FORMATS:
        peer_folder = join(args.peer_dir, backend)
    if peer_folder is not None and not at(peer_folder).streamed:
        evict_from_page_cache(p for p in peer_folder.rglob("*") if p.is_file())
    elif backend is None:
        evict_from_page_cache(p for pair in pairs for p in pair)
    elif not at(args.shards).streamed:
        evict_from_page_cache(p for p in Path(args.shards).iterdir() if p.is_file())
    cold_start = time.perf_counter()
    mmseg = {"base": tuple(args.base_size) if args.base_size else None, "ratio_range": tuple(args.ratio_range),
             "cat_max_ratio": args.cat_max_ratio, "photometric": args.photometric}
    if args.augment == "mmseg" and backend in (None, "albumentations"):
        if not size or not mmseg["base"]:
            raise SystemExit("--augment mmseg needs --size (the crop) and --base-size for vanilla and albumentations")
    if backend is None:
        loader = vanilla_loader(pairs, mean, std, args.batch_size, args.workers, size, args.augment, mmseg=mmseg)
    elif backend == "albumentations":
        if args.augment != "mmseg":
            raise SystemExit("the albumentations peer runs --augment mmseg only")
        loader = PeerEpochs(peers.albumentations_loader(pairs, mean, std, args.batch_size, args.workers, size,
                                                              mmseg, recipe), mean, std, recipe, device)
    elif backend == "webdataset":
        if args.augment != "flip":
            raise SystemExit("the webdataset peer runs --augment flip only (its crop is not written yet)")
        from fastseg.sets import check_shards, open_set

        if manifest.storage.get("image") == "raw" or manifest.storage.get("mask") == "raw":
            raise SystemExit("the webdataset peer decodes image and mask files: give --shards a set written with "
                             "--store source or fast-png")
        urls, _ = check_shards(open_set(args.shards), "train", checksums=False)
        peer = webdataset_loader(urls, mean, std, args.batch_size, args.workers, recipe, pin=device == "cuda")
        loader = PeerEpochs(peer, mean, std, recipe, device)
    elif backend in PEER_FORMATS:
        loader = PeerEpochs(peers.loader(backend, peer_folder, mean, std, args.batch_size,
                                               args.workers, recipe, pin=device == "cuda"), mean, std, recipe, device)
    else:
        recipe_options = {} if args.augment != "mmseg" else {
            "base_size": mmseg["base"], "ratio_range": mmseg["ratio_range"], "cat_max_ratio": mmseg["cat_max_ratio"],
            "photometric": mmseg["photometric"]}
        if args.augment in ("crop", "mmseg"):  # decode each image's window alone, or (NAME_full) whole images
            recipe_options["window_decode"] = not args.child.endswith("_full")
        loader = make_loader(args.shards, backend=backend, batch_size=args.batch_size, size=size, augment=args.augment,
                             device=device, workers=args.workers, **recipe_options)
    me = psutil.Process()

    def cpu_seconds():  # this process, its live workers, and workers that have already exited
        import resource

        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        live = sum(sum(p.cpu_times()[:2]) for p in me.children(recursive=True))
        return sum(me.cpu_times()[:2]) + live + done.ru_utime + done.ru_stime

    def one_epoch() -> int:
        """Real samples delivered (padding left out): every loader is counted by what it actually yields."""
        samples = 0
        for batch in loader:
            batch["image"].sum()  # touch the output, as a training step would
            samples += batch.get("real", batch["image"].shape[0])
        if device == "cuda":
            torch.cuda.synchronize()
        return samples

    cold_samples = one_epoch()  # the cold first epoch is the warm-up
    cold = {"seconds": round(time.perf_counter() - cold_start, 3), "samples": cold_samples}
    batch = next(iter(loader))  # every loader yields the same contract, or its figure would compare other work
    image, mask = batch["image"], batch["mask"]
    if not (image.dtype == torch.float32 and mask.dtype == torch.int64 and image.dim() == 4 and image.shape[1] == 3
            and tuple(mask.shape) == (image.shape[0], *image.shape[2:])):
        raise SystemExit(f"{args.child}: not the batch contract ({image.dtype} {tuple(image.shape)}, "
                         f"{mask.dtype} {tuple(mask.shape)})")
    contract = [list(image.shape), str(image.dtype), list(mask.shape), str(mask.dtype)]
    rounds, cpu = [], 0.0
    for _ in range(args.rounds):
        start, cpu_start, epochs, samples = time.perf_counter(), cpu_seconds(), 0, 0
        while not epochs or time.perf_counter() - start < args.min_seconds:
            samples += one_epoch()
            epochs += 1
        rounds.append({"seconds": time.perf_counter() - start, "samples": samples})
        cpu += cpu_seconds() - cpu_start
    print(json.dumps({"rounds": rounds, "cpu_seconds": cpu, "contract": contract, "cold_epoch": cold}))


def report(result: dict, json_path: Path | None) -> None:
    lines = ["| loader | workers | samples/s | MB/s | × vanilla | × best peer | of limit | CPU use | peak memory "
             "| cold first epoch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in result["runs"]:
        for name, r in run["loaders"].items():
            if "skipped" in r or "error" in r:
                lines.append(f"| {name} | {run['workers']} | {r.get('skipped') or 'error: ' + r['error']} "
                             "| | | | | | | |")
                continue
            ratios = [f"{r[key]:.2f}×" if key in r else "-" for key in ("vs_vanilla", "vs_best_peer")]
            lines.append(f"| {name} | {run['workers']} | {r['samples_per_s']:.1f} | {r['mb_per_s']:.1f} | "
                         f"{' | '.join(ratios)} | {r['of_limit']:.0%} | {r['cpu_utilisation']:.0%} | "
                         f"{r['peak_memory_mb']:.0f} MB | {r['cold_epoch_samples_per_s']:.1f}/s "
                         f"({r['cold_epoch_seconds']:.1f} s) |")
        lines.append(f"| decode-bound limit ({run['limit_cores']} × single-core Pillow) | {run['workers']} | "
                     f"{run['decode_limit_samples_per_s']:.1f} | | | | 100% | | | |")
    if "peers" in result:
        work = {"litdata": "optimize(): JPEG bytes kept; PNG images and masks stored as raw pixels",
                "mosaic": "MDSWriter (one process): JPEG bytes kept (PNG images re-encoded as PNG), masks re-encoded "
                          "as PNG"}
        lines += ["", "Conversion of the train split's source files, each tool with its own writer:", "",
                  "| tool | processes | seconds | samples/s | size on disk | peak memory | work per sample |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for tool, c in result["peers"]["conversion"].items():
            if "error" in c:
                lines.append(f"| {tool} | | error: {c['error']} | | | | |")
                continue
            what = work.get(tool) or ("decodes and checks every image and mask, converts masks to class ids, takes "
                                      "mean/std and class counts, writes tars + DALI indexes + manifest; stores "
                                      "images {image}, masks {mask}".format(**c["storage"]))
            lines.append(f"| {tool} | {c['processes']} | {c['seconds']:.1f} | {c['samples_per_s']:.1f} | "
                         f"{c['bytes_on_disk'] / 1e6:.1f} MB | {c['peak_memory_mb']:.0f} MB | {what} |")
    title = (f"Loader benchmark: {result['dataset']}, {result['device_kind']}, augment {result['augment']}, batch "
             f"{result['batch_size']}, output {result['size']}, median of {result['rounds']} rounds of at least "
             f"{result['min_seconds']} s after a warm-up epoch")
    publish(lines, json_path, result, title)
    if json_path:
        if max(len(run["loaders"]) for run in result["runs"]) <= MAX_BARS:
            loader_chart(result, json_path.with_suffix(".png"), f"{Path(result['dataset']).name}, "
                         f"{result['device_kind']}, augment {result['augment']}, batch {result['batch_size']}")
        else:
            print(f"no chart: more than {MAX_BARS} loaders in one run (a chart compares at most {MAX_BARS})")


def measure_loader(name: str, workers: int, args, limit: float, mb: float, shards=None, peer_dir=None) -> dict:
    argv = [__file__, "--child", name, "--shards", str(shards or args.shards), "--batch-size", str(args.batch_size),
            "--workers", str(workers), "--rounds", str(args.rounds), "--min-seconds", str(args.min_seconds),
            "--augment", args.augment, "--size", *map(str, args.size), "--ratio-range", *map(str, args.ratio_range),
            "--cat-max-ratio", str(args.cat_max_ratio), "--photometric" if args.photometric else "--no-photometric"]
    if args.base_size:
        argv += ["--base-size", *map(str, args.base_size)]
    peer = LOADERS[name][0] in PEER_FORMATS
    if peer:
        argv += ["--peer-dir", str(peer_dir or args.peer_dir)]
    try:
        figures, monitor, _ = run_child(argv, python=args.peer_python if peer else None)
    except RuntimeError as err:  # a peer that cannot run here is reported with its error, never skipped silently
        if not peer:
            raise
        return {"error": str(err)}
    rates = [r["samples"] / r["seconds"] for r in figures["rounds"]]
    per_s = statistics.median(rates)
    seconds = sum(r["seconds"] for r in figures["rounds"])
    return {
        "samples_per_s": round(per_s, 2), "mb_per_s": round(mb * per_s, 2),
        "round_samples_per_s": [round(r, 2) for r in rates],
        "round_seconds": [round(r["seconds"], 3) for r in figures["rounds"]],
        "cpu_utilisation": round(figures["cpu_seconds"] / (seconds * (os.cpu_count() or 1)), 3),
        "peak_memory_mb": round(monitor.peak_rss / 1e6, 1), "of_limit": round(per_s / limit, 3),
        "batch": figures["contract"],
        "cold_epoch_seconds": figures["cold_epoch"]["seconds"],
        "cold_epoch_samples_per_s": round(figures["cold_epoch"]["samples"] / figures["cold_epoch"]["seconds"], 2),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path)
    p.add_argument("--shards", type=location, help="a shard set in a folder (from a bucket: store_bench.py)")
    p.add_argument("--augment", choices=("flip", "crop", "mmseg"), default="flip")
    p.add_argument("--base-size", type=int, nargs=2, metavar=("H", "W"), help="mmseg: the scale resized by the ratio")
    p.add_argument("--ratio-range", type=float, nargs=2, default=(0.5, 2.0), metavar=("LO", "HI"))
    p.add_argument("--cat-max-ratio", type=float, default=0.75)
    p.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1],
                   help="one or more worker/thread counts (default: the number of cores)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--rounds", type=int, default=3, help="timed rounds")
    p.add_argument("--min-seconds", type=float, default=2.0, help="each timed round lasts at least this long")
    p.add_argument("--loaders", nargs="+", choices=list(LOADERS), default=DEFAULT_LOADERS,
                   help="default: the fastseg loaders and vanilla; add webdataset_r1 webdataset_r2 for the peer")
    p.add_argument("--peer-python", default=sys.executable,
                   help="the interpreter of the peers' own environment (benchmarks/peers_setup.sh makes one)")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=list(LOADERS), help=argparse.SUPPRESS)
    p.add_argument("--peer-dir", type=location, help=argparse.SUPPRESS)
    return p


def main() -> int:
    p = build_parser()
    args = p.parse_args()
    if args.child:
        args.workers = args.workers[0]
        child(args)
        return 0
    if args.shards is not None and at(args.shards).streamed:
        p.error(f"{args.shards}: loader_bench.py compares loaders on disk; a set in a bucket is store_bench.py's")
    with tempfile.TemporaryDirectory() as tmp:
        if args.shards is None:
            if args.data is not None:
                p.error("give --shards with --data (make them with fastseg-shard DATA SHARDS)")
            args.data, args.shards = default_dataset(Path(tmp))
            print(f"no --data/--shards: using a generated synthetic set in {args.data}")
        if args.size is None:
            args.size = one_size(args.shards) or p.error("the train split has images of several sizes: give --size H W")
        pairs = train_pairs(args.shards)
        result = describe_run(args, pairs)
        sources = loader_sources(args, Path(tmp), result)
        mb_per_sample = sum(os.path.getsize(i) + os.path.getsize(m) for i, m in pairs) / 1e6 / len(pairs)
        from tqdm import tqdm

        progress = tqdm(total=len(args.workers) * len(sources), desc="loaders", unit="run")
        for workers in args.workers:
            result["runs"].append(compare(run_loaders(args, workers, sources, result, mb_per_sample, progress)))
        progress.close()
        report(result, args.json)
    return 0


def one_size(shards) -> list[int] | None:
    """[H, W] of a train split whose images all have one size, else None."""
    from fastseg import FastsegError
    from fastseg.sets import load_manifest
    from fastseg.loading import native_size

    try:
        return list(native_size(load_manifest(shards), "train"))
    except FastsegError:
        return None


def describe_run(args, pairs) -> dict:
    """The run's settings, the machine, and the single-core Pillow decode rate the limits are made of."""
    import torch

    decode = decode_rate(pairs, args.rounds, args.min_seconds)
    return {"dataset": str(args.data), "samples": len(pairs), "batch_size": args.batch_size,
            "augment": args.augment, "size": args.size, "rounds": args.rounds, "min_seconds": args.min_seconds,
            **({"mmseg": {"base_size": args.base_size, "ratio_range": list(args.ratio_range),
                          "cat_max_ratio": args.cat_max_ratio, "photometric": args.photometric}}
               if args.augment == "mmseg" else {}),
            "device_kind": "GPU" if torch.cuda.is_available() else "CPU",
            "decode_single_core_samples_per_s": round(decode["samples_per_s"], 2),
            "decode_single_core_rounds": decode["rounds"], "resampling": RESAMPLING,
            "runs": [], **provenance()}


def loader_sources(args, tmp: Path, result: dict) -> list[tuple[str, object, object]]:
    """(name, shards, peer folder) of every loader to run, after writing the peers' own formats."""
    args.peer_dir = tmp / "peers"
    kinds = sorted({LOADERS[name][0] for name in args.loaders} & set(PEER_FORMATS))
    if kinds:
        result["peers"] = convert_peers(kinds, args.shards, args.peer_dir, args.peer_python, max(args.workers))
    return [(name, None, None) for name in args.loaders]


def run_loaders(args, workers: int, sources, result: dict, mb_per_sample: float, progress) -> dict:
    """One worker count: every loader measured in its own process, against the decode limit of the cores used."""
    import torch

    cores = min(workers, os.cpu_count() or 1)
    limit = round(result["decode_single_core_samples_per_s"] * cores, 2)
    run = {"workers": workers, "limit_cores": cores, "decode_limit_samples_per_s": limit, "loaders": {}}
    for name, shards, peer_dir in sources:
        base = name.split(" ")[0]
        progress.set_postfix_str(f"{name}, {workers} workers")
        if LOADERS[base][1] == "cuda" and not torch.cuda.is_available():
            run["loaders"][name] = {"skipped": "no CUDA device"}
        else:
            run["loaders"][name] = measure_loader(base, workers, args, limit, mb_per_sample, shards, peer_dir)
        progress.update()
    return run


def compare(run: dict) -> dict:
    """Each loader's rate × vanilla's and × the best peer's of the same run; the best peer named."""
    vanilla = run["loaders"].get("vanilla", {}).get("samples_per_s")
    peer_rates = [r["samples_per_s"] for name, r in run["loaders"].items()
                  if "samples_per_s" in r and LOADERS[name.split(" ")[0]][0] in PEERS]
    if peer_rates:
        run["best_peer"] = next(name for name, r in run["loaders"].items() if r.get("samples_per_s") == max(peer_rates))
    for r in run["loaders"].values():
        if vanilla and "samples_per_s" in r:
            r["vs_vanilla"] = round(r["samples_per_s"] / vanilla, 3)
        if peer_rates and "samples_per_s" in r:
            r["vs_best_peer"] = round(r["samples_per_s"] / max(peer_rates), 3)
    return run


if __name__ == "__main__":
    sys.exit(main())
