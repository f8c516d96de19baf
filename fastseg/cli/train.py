"""fastseg-train --shards DIR: train and validate the UNet; DDP and precision are Trainer settings."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import FastsegError
from ..format import Manifest
from ..sets import ShardSet, open_set
from ..loading.config import LoaderConfig, default_workers
from ..settings import declared, dest, flag, from_args
from ..storage import is_remote, location
from ..training.checkpoints import local_checkpoint
from ..training.model import PRECISION_DTYPES, import_factory, parse_model_args
from ..training.optim import OptimSettings
from ..training.scoring import Scoring
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


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved and checked once, before a process is started or a step taken."""

    shard_set: ShardSet  # the set, its manifest read once here and handed down to every loader
    loader: LoaderConfig  # the training loader's options, decided for the training split
    train_split: str
    val_split: str
    out: Path
    epochs: int | None  # None: a run counted in max_steps
    max_steps: int | None
    dice_weight: float
    width: int
    model_path: str | None  # --model: your own network's factory
    model_args: dict
    optim: OptimSettings  # the optimizer and schedule
    class_weights: list[float] | None
    compile_model: bool  # torch.compile the network
    accelerator: str  # "gpu" or "cpu"
    devices: int
    num_nodes: int
    precision: str
    resume: str | None  # the checkpoint to resume from
    resume_flag: str | None  # --resume as given ("auto" may have found nothing)
    overwrite: bool
    log_every: int
    checkpoint_every: int | None
    log_batch_keys: bool
    scoring: Scoring  # how validation scores
    settings: dict  # the settings as flags and --config take them: OUT/config.yaml

    @property
    def manifest(self) -> Manifest:
        return self.shard_set.manifest

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.accelerator == "gpu" else "cpu")

    @property
    def ranks(self) -> int:
        return self.devices * self.num_nodes

    def as_json(self, world_size: int) -> dict:
        """config.json: the run as resolved, one flat object."""
        fields = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()
                  if k not in ("shard_set", "loader", "scoring", "settings", "optim")}
        fields.update({k: v for k, v in asdict(self.optim).items() if k != "epochs"})
        loader = {k: v for k, v in asdict(self.loader).items() if k != "backend"}
        return {"shards": str(self.shard_set.root), "loader": self.loader.backend, **loader,
                "image_size": list(self.loader.size), **fields, "world_size": world_size,
                "resumed_from": self.resume, "scoring": self.scoring.describe(self.loader.size)}


def _given(value):
    return tuple(value) if isinstance(value, list) else value


def resolve(args, settings: dict | None = None) -> RunConfig:
    """Check everything that can be checked before a process is started or a step taken."""
    from ..loading.contract import batches_per_epoch
    from ..loading.datamodule import check_resumable
    from ..training.checkpoints import datamodule_state
    from ..training.model import check_size

    if is_remote(args.out):
        raise FastsegError(f"--out {args.out}: a run is written to a local or mounted folder (checkpoints are renamed "
                           "into place, logs appended); train into a folder, then copy it to the store, or mount the "
                           "bucket (s3fs, gcsfuse, blobfuse2)")
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


class NotOurs(logging.Filter):
    """Lightning's advert for a cloud logger, and its Ctrl-C line (fastseg-train says what happened itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in ("litlogger", "Detected KeyboardInterrupt"))


def quiet_lightning() -> None:
    """Silence what Lightning says that is not the user's business, narrowly, and keep every other warning: its
    advert for a cloud logger, a deprecation inside its own pytree helper (torch deprecated LeafSpec, Lightning
    still checks for it), the mid-epoch-resume warning (the loaders restore their exact position, so it does not
    apply), the one about a non-empty checkpoint folder (claim_out already decided that --out may be used), and its
    Ctrl-C line (fastseg-train says where the run stands instead)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(NotOurs())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


# what fastseg-train writes under --out; --overwrite removes these and nothing else
RUN_OUTPUTS = ("checkpoints", "logs", "previews", "batches", "metrics.json", "config.json", "config.yaml",
               "curves.png", "per_class_iou.png")


def claim_out(out: Path, resume_flag: str | None, resume: str | None, overwrite: bool) -> None:
    """Never train over a previous run by accident: an --out that holds one needs --resume or --overwrite."""
    previous = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) + (
        ["metrics.json"] if (out / "metrics.json").exists() else [])
    if resume_flag == "auto" and resume is None:
        print(f"--resume auto: no checkpoint in {out / 'checkpoints'}; starting a new run")
    if not previous or resume_flag:
        return
    if not overwrite:
        raise FastsegError(f"{out} already holds a run ({', '.join(previous)}); continue it with --resume auto, "
                           "replace it with --overwrite, or choose another --out")
    removed = [name for name in RUN_OUTPUTS if (out / name).exists()]
    for name in removed:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    print(f"--overwrite: removed the previous run's {', '.join(removed)} from {out}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = configs.read(parser, argv)
    if args is None:
        return 0
    run = resolve(args, configs.settings(parser, args, leave_out=FOLDER_SETTINGS))
    import pytorch_lightning as pl

    from ..training.interruptions import Interruption

    quiet_lightning()
    pl.seed_everything(run.loader.seed, workers=True, verbose=False)
    data, module = datamodule(run), segmodule(run)
    guard = Interruption(run.out / "checkpoints", on_lost=lambda *lost: print(lost_line(run, argv, lost),
                                                                               file=sys.stderr, flush=True))
    callbacks, checkpoints, meter = make_callbacks(run)
    trainer = make_trainer(run, [*callbacks, guard], profiler=meter.timer)
    if trainer.is_global_zero:
        claim_out(run.out, run.resume_flag, run.resume, run.overwrite)
        write_config(run, trainer.world_size)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=run.resume)
    except BaseException as err:  # Ctrl-C comes back as Lightning's SystemExit(1), SIGTERM as a SystemExit too
        return stopped_early(run, argv, guard, trainer, err)
    if trainer.is_global_zero and module.last_scores is not None:
        report(run, module, trainer, checkpoints, meter)
    return 0


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same flags, with --resume auto and without --overwrite."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg == "--overwrite" or arg.startswith("--resume="):
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        kept.append(arg)
    return shlex.join(["fastseg-train", *kept, "--resume", "auto"])


def last_checkpoint(run: RunConfig) -> str:
    from ..training.interruptions import checkpoint_position

    path = run.out / "checkpoints" / "last.ckpt"
    position = checkpoint_position(path) if path.exists() else None
    if position is None:
        return "no checkpoint was written yet, so the run starts over"
    return f"the last checkpoint is {path} ({position})"


def lost_line(run: RunConfig, argv: list[str], lost: tuple[int, int] | None, log: Path | None = None) -> str:
    from ..training.interruptions import rank_gone

    where = f" (the traceback is in {log})" if log else ""
    return (f"fastseg-train: error: {rank_gone(lost)}, so training stopped{where}; {last_checkpoint(run)}; "
            f"continue with: {resume_command(argv)}")


def stopped_early(run: RunConfig, argv: list[str], guard, trainer, err: BaseException) -> int:
    """One line for a run that stopped early (a signal, or a lost rank), and its exit status; any other error is
    raised as it is."""
    from ..training.interruptions import lost_rank

    if guard.stopped is not None:
        stopped = guard.stopped
        if trainer.is_global_zero:
            saved = f"wrote {stopped.checkpoint}" if stopped.checkpoint else last_checkpoint(run)
            print(f"fastseg-train: {stopped.signal}: stopped; {saved}; continue with: {resume_command(argv)}",
                  file=sys.stderr, flush=True)
        return stopped.exit_code
    if isinstance(err, Exception) and (guard.lost or lost_rank(err)):
        log = run.out / "logs" / f"error-rank{trainer.global_rank}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(err)))
        print(lost_line(run, argv, guard.lost, log), file=sys.stderr, flush=True)
        return 1
    raise err


def datamodule(run: RunConfig):
    from ..loading.datamodule import SegDataModule

    return SegDataModule(run.shard_set, run.loader, train_split=run.train_split, val_split=run.val_split,
                         val_options=run.scoring.loader_options(run.loader.size), resume_checked=True)


def segmodule(run: RunConfig):
    from ..training.module import SegModule

    manifest = run.manifest
    return SegModule([c.name for c in manifest.classes], class_colors=[c.color for c in manifest.classes],
                     mean=manifest.mean, std=manifest.std, image_size=run.loader.size, width=run.width,
                     optim=run.optim, scoring=run.scoring, dice_weight=run.dice_weight,
                     channels_last=run.loader.channels_last, compile_model=run.compile_model,
                     model_path=run.model_path, model_args=run.model_args, class_weights=run.class_weights)


def make_callbacks(run: RunConfig):
    """Checkpoints (best by validation mIoU, last every epoch and every --checkpoint-every steps), the meter,
    previews, the progress bar and the batch-key log; returns them with the best-checkpoint callback and meter."""
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    from ..training.callbacks import BatchKeyLog, PreviewWriter, RunPictures
    from ..training.losses import out_channels
    from ..training.meter import FetchTimer, ThroughputMeter, flops_per_image, peak_flops
    from ..training.model import build_model

    folder = run.out / "checkpoints"
    checkpoints = ModelCheckpoint(dirpath=folder, filename="best", monitor="val_miou", mode="max",
                                  enable_version_counter=False)
    # Lightning's save_last refreshes last.ckpt only when a better best.ckpt is saved; resume needs every epoch
    callbacks = [checkpoints, ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)]
    if run.checkpoint_every:
        callbacks.append(ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False,
                                         every_n_train_steps=run.checkpoint_every, save_on_train_epoch_end=False))
    classes = out_channels(run.manifest.num_classes)
    build = (lambda: build_model(run.model_path, run.model_args, classes)) if run.model_path else None
    flops = flops_per_image(classes, run.width, run.loader.size, build)
    meter = ThroughputMeter(FetchTimer(), flops, peak_flops(run.device, run.precision))
    callbacks += [meter, RunPictures(run.out, meter), PreviewWriter(run.out / "previews"),
                  TQDMProgressBar(refresh_rate=run.log_every)]
    if run.log_batch_keys:
        callbacks.append(BatchKeyLog(run.out / "batches"))
    return callbacks, checkpoints, meter


def make_trainer(run: RunConfig, callbacks: list, profiler):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from ..training.checkpoints import AtomicCheckpointIO

    return pl.Trainer(
        accelerator=run.accelerator, devices=run.devices, num_nodes=run.num_nodes,
        strategy="ddp" if run.ranks > 1 else "auto", precision=run.precision,
        max_epochs=run.epochs, max_steps=run.max_steps or -1, default_root_dir=run.out, use_distributed_sampler=False,
        logger=[TensorBoardLogger(run.out / "logs", name="tensorboard"), CSVLogger(run.out / "logs", name="csv")],
        callbacks=callbacks, log_every_n_steps=run.log_every, enable_model_summary=False,
        benchmark=run.accelerator == "gpu", profiler=profiler, plugins=[AtomicCheckpointIO()],
    )


def write_config(run: RunConfig, world_size: int) -> None:
    """config.yaml: the settings, which `fastseg-train --config OUT/config.yaml` reruns; config.json: the run as
    resolved (sizes from the manifest, workers, the world size)."""
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "config.yaml").write_text(configs.dump(run.settings))
    (run.out / "config.json").write_text(json.dumps(run.as_json(world_size), indent=2) + "\n")


def report(run: RunConfig, module, trainer, checkpoints, meter) -> None:
    """metrics.json (and the table), with the meter's figures and its one-line verdict."""
    from ..training.callbacks import metrics_report, write_report

    found = metrics_report(module.last_scores, module.hparams.class_names)
    found.update(run.scoring.describe(run.loader.size))
    found.update(epochs=trainer.current_epoch, best_checkpoint=str(checkpoints.best_model_path))
    if meter.epochs:
        found["throughput"] = meter.report(run.loader.backend, run.loader.workers, run.accelerator,
                                           run.loader.augment)
    write_report(run.out / "metrics.json", found)
    if meter.epochs:
        print(f"throughput: {found['throughput']['verdict']}")


def entry() -> None:
    sys.exit(run_cli("fastseg-train", main))


if __name__ == "__main__":
    entry()
