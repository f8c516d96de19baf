"""One fastseg-train run, assembled from its resolved settings (RunConfig, which cli/train.py resolves and checks
before anything starts): the loaders (SegDataModule), the module, the callbacks and the Lightning Trainer; the run's
folder claimed (a previous run is never trained over by accident), and what the run writes there (config.yaml,
config.json, metrics.json)."""
from __future__ import annotations

import json
import logging
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import FastsegError
from ..format import Manifest
from ..loading.config import LoaderConfig
from ..sets import ShardSet
from ..settings import dump
from .interruptions import Interruption, lost_line, stopped_early
from .optim import OptimSettings
from .scoring import Scoring


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


def fit(run: RunConfig, argv: list[str]) -> int:
    """Train and validate as `run` says (`argv`: the command line, for the line that continues a stopped run):
    seeded, with the loaders, the module, the callbacks and the trainer assembled here; on rank 0 the run's folder
    claimed and its config written first, and its metrics last. The exit status."""
    import pytorch_lightning as pl

    quiet_lightning()
    pl.seed_everything(run.loader.seed, workers=True, verbose=False)
    data, module = datamodule(run), segmodule(run)
    guard = Interruption(run.out / "checkpoints", on_lost=lambda *lost: print(lost_line(run.out, argv, lost),
                                                                               file=sys.stderr, flush=True))
    callbacks, checkpoints, meter = make_callbacks(run)
    trainer = make_trainer(run, [*callbacks, guard], profiler=meter.timer)
    if trainer.is_global_zero:
        claim_out(run.out, run.resume_flag, run.resume, run.overwrite)
        write_config(run, trainer.world_size)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=run.resume)
    except BaseException as err:  # Ctrl-C comes back as Lightning's SystemExit(1), SIGTERM as a SystemExit too
        return stopped_early(run.out, argv, guard, trainer, err)
    if trainer.is_global_zero and module.last_scores is not None:
        report(run, module, trainer, checkpoints, meter)
    return 0


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


def datamodule(run: RunConfig):
    from ..loading import SegDataModule

    return SegDataModule(run.shard_set, run.loader, train_split=run.train_split, val_split=run.val_split,
                         val_options=run.scoring.loader_options(run.loader.size), resume_checked=True)


def segmodule(run: RunConfig):
    from .module import SegModule

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

    from .callbacks import BatchKeyLog, PreviewWriter, RunPictures
    from .losses import out_channels
    from .meter import FetchTimer, ThroughputMeter, flops_per_image, peak_flops
    from .model import build_model

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

    from .checkpoints import AtomicCheckpointIO

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
    (run.out / "config.yaml").write_text(dump(run.settings))
    (run.out / "config.json").write_text(json.dumps(run.as_json(world_size), indent=2) + "\n")


def report(run: RunConfig, module, trainer, checkpoints, meter) -> None:
    """metrics.json (and the table), with the meter's figures and its one-line verdict."""
    from .callbacks import metrics_report, write_report

    found = metrics_report(module.last_scores, module.hparams.class_names)
    found.update(run.scoring.describe(run.loader.size))
    found.update(epochs=trainer.current_epoch, best_checkpoint=str(checkpoints.best_model_path))
    if meter.epochs:
        found["throughput"] = meter.report(run.loader.backend, run.loader.workers, run.accelerator,
                                           run.loader.augment)
    write_report(run.out / "metrics.json", found)
    if meter.epochs:
        print(f"throughput: {found['throughput']['verdict']}")
