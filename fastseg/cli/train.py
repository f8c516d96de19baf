"""fastseg-train --shards DIR: train and validate the UNet; DDP and precision are Trainer settings.

The flags, and every setting resolved and checked (`resolve`) before a process starts or a step is taken; the run
itself is assembled and fitted by training/run.py."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .. import storage
from ..errors import FastsegError
from ..loading.config import LoaderConfig, default_workers
from ..sets import open_set
from ..settings import declared, dest, flag, from_args
from ..storage import location
from ..training.checkpoints import local_checkpoint
from ..training.model import PRECISION_DTYPES, import_factory, parse_model_args
from ..training.optim import OptimSettings
from ..training.run import RunConfig, fit
from . import configs, run_cli
from .configs import add_config_flags
from .evaluation import add_evaluation_arguments, scoring_from


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastseg-train", description=__doc__)
    p.add_argument("--shards", type=location, required=True, help="a shard set made by fastseg-shard")
    p.add_argument("--out", type=location, default=Path("runs/fastseg"),
                   help="a local or mounted folder for checkpoints, logs, metrics (default runs/fastseg)")
    p.add_argument("--epochs", type=int, help="training epochs (default 20; or count the run in --max-steps)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="train for N optimizer steps instead of epochs, as MMSegmentation's configs count (80k, 160k)")
    p.add_argument("--class-weights", choices=("none", "median-freq"), default="none",
                   help="median-freq: SegNet's median frequency balancing, from the manifest's class pixel counts")
    p.add_argument("--dice-weight", type=float, default=0.0, help="add this times the Dice loss")
    p.add_argument("--width", type=int, default=64, help="UNet base width (64 is the classic)")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FUNCTION",
                   help="your own network: FUNCTION(num_classes=C, **model args) returns an nn.Module giving "
                        "N×C×H×W logits (C: 1 for two classes, else the class count); default: the UNet")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument for --model's function (repeat it); VALUE is read as a Python literal if it "
                        "is one")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--devices", type=int, default=1, help="more than one means DDP")
    p.add_argument("--num-nodes", type=int, default=1, help="for torchrun/SLURM multi-node runs")
    p.add_argument("--precision", choices=tuple(PRECISION_DTYPES),
                   help="default 16-mixed on GPU, 32-true on CPU (fp16 needs a GPU; bf16-mixed runs on CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (pays off on long GPU runs: compiling takes about a minute)")
    p.add_argument("--log-every", type=int, default=50, help="log the training loss every N steps (default 50)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also write last.ckpt every N training steps, for an exact resume from mid-epoch")
    p.add_argument("--resume", help="'auto' (OUT/checkpoints/last.ckpt if there, else a new run), a checkpoint path, "
                   "or a checkpoint in a store (s3://, gs://, az://, https://)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds a previous one (its checkpoints, logs, previews and "
                        "metrics are removed first; other files are left alone)")
    p.add_argument("--split", default="train", help="training split (default train)")
    p.add_argument("--val-split", default="val")
    loader = p.add_argument_group("loading (fastseg.loading.LoaderConfig)")
    # channels_last None: on for GPU, decided once the accelerator is
    configs.add_options(loader, LoaderConfig, defaults={"channels_last": None})
    optim = p.add_argument_group("optimizer and schedule (fastseg.training.OptimSettings)")
    configs.add_options(optim, OptimSettings)
    add_evaluation_arguments(p)
    add_config_flags(p)
    return p


# settings about the run's folder rather than the run: not in OUT/config.yaml, so that it reruns anywhere
FOLDER_SETTINGS = ("resume", "overwrite")


def _given(value):
    return tuple(value) if isinstance(value, list) else value


def resolve(args, settings: dict | None = None) -> RunConfig:
    """Check everything that can be checked before a process is started or a step taken."""
    from ..loading.contract import batches_per_epoch
    from ..loading.datamodule import check_resumable
    from ..training.checkpoints import datamodule_state
    from ..training.model import check_size

    storage.at(args.out).local(f"--out {args.out}: a run is written to a local or mounted folder (checkpoints are "
                               "renamed into place, logs appended); train into a folder, then copy it to the store, "
                               "or mount the bucket (s3fs, gcsfuse, blobfuse2)")
    shard_set = open_set(args.shards)
    manifest = shard_set.manifest
    for split, split_flag in ((args.split, "--split"), (args.val_split, "--val-split")):
        if split not in manifest.splits:
            raise FastsegError(f"no split {split!r} in {args.shards} (it has: {', '.join(manifest.splits)}); "
                               f"choose one with {split_flag}")
    gpus = torch.cuda.device_count()
    accelerator = args.accelerator if args.accelerator != "auto" else ("gpu" if gpus else "cpu")
    if accelerator == "gpu" and args.devices > gpus:
        raise FastsegError(f"--devices {args.devices} on the GPU, but {gpus} CUDA device(s) are visible; "
                           "lower --devices or use --accelerator cpu")
    for name, value in (("--devices", args.devices), ("--log-every", args.log_every),
                        ("--checkpoint-every", args.checkpoint_every or 1), ("--epochs", args.epochs or 1),
                        ("--max-steps", args.max_steps or 1)):
        if value < 1:
            raise FastsegError(f"{name} must be at least 1")
    augment = args.augment or "flip"  # what LoaderConfig decides for a training split
    for spec in declared(LoaderConfig):  # an option of one augmentation, given with another, would have no effect
        mode = spec.metadata["mode"]
        if mode and augment != mode and _given(getattr(args, dest(spec))) != _given(spec.default):
            raise FastsegError(f"{flag(spec)} is an option of --augment {mode} and has no effect with --augment "
                               f"{augment}; drop it, or train with --augment {mode}")
    if args.epochs is not None and args.max_steps is not None:
        raise FastsegError("--epochs and --max-steps both say how long to train; give one of them")
    if args.model:
        import_factory(args.model)  # importable, before any process starts
    class_weights = None
    if args.class_weights == "median-freq":
        from ..training.optim import median_frequency_weights

        class_weights = median_frequency_weights([manifest.class_pixels.get(c.name, 0) for c in manifest.classes])
    precision = args.precision or ("16-mixed" if accelerator == "gpu" else "32-true")
    if accelerator == "cpu" and precision == "16-mixed":
        raise FastsegError(f"--precision {precision} needs a GPU; on the CPU use bf16-mixed or 32-true")
    loader = from_args(
        LoaderConfig, args, workers=default_workers(args.devices) if args.workers is None else args.workers,
        channels_last=accelerator == "gpu" if args.channels_last is None else args.channels_last,
    ).for_split(manifest, args.split, training=True)
    check_size(*loader.size)
    ranks = args.devices * args.num_nodes
    resume = args.resume
    if resume and args.overwrite:
        raise FastsegError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    if resume == "auto":
        last = args.out / "checkpoints" / "last.ckpt"
        resume = str(last) if last.exists() else None
    elif resume:  # a path, or a checkpoint in a store, fetched once into the cache
        resume = str(local_checkpoint(location(resume)))
        if not Path(resume).exists():
            raise FastsegError(f"--resume {args.resume}: no such checkpoint")
    if resume:
        state = datamodule_state(Path(resume))
        if state:
            check_resumable(state, ranks, loader)
    epochs = None if args.max_steps else (args.epochs or OptimSettings.epochs)
    optim = from_args(OptimSettings, args, epochs=epochs)
    # log at least once an epoch (Lightning warns when the cadence is longer than an epoch)
    steps = batches_per_epoch(manifest.splits[args.split].samples, ranks, args.batch_size)
    return RunConfig(
        shard_set=shard_set, loader=loader, train_split=args.split, val_split=args.val_split, out=args.out,
        epochs=epochs, max_steps=args.max_steps, optim=optim, dice_weight=args.dice_weight, width=args.width,
        model_path=args.model, model_args=parse_model_args(args.model_arg), class_weights=class_weights,
        compile_model=args.compile,
        accelerator=accelerator, devices=args.devices, num_nodes=args.num_nodes, precision=precision, resume=resume,
        resume_flag=args.resume, overwrite=args.overwrite, log_every=min(args.log_every, steps), checkpoint_every=args.checkpoint_every,
        log_batch_keys=args.log_batch_keys,
        scoring=scoring_from(args).with_default_size(loader.evaluation_scale), settings=settings or {},
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = configs.read(parser, argv)
    if args is None:
        return 0
    return fit(resolve(args, configs.settings(parser, args, leave_out=FOLDER_SETTINGS)), argv)


def entry() -> None:
    sys.exit(run_cli("fastseg-train", main))


if __name__ == "__main__":
    entry()
