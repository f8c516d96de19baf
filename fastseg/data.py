"""make_loader(): one batch contract over two backends (DALI, or a torch DataLoader twin), and SegDataModule.

The contract itself (slices, batches per epoch, padding, resumable position) lives in plan.py, which both backends
import; this module only checks the arguments and picks a backend.
"""
from __future__ import annotations

import os

import pytorch_lightning as pl
import torch

from .errors import FastsegError
from .format import check_shards, load_manifest
from .plan import LoaderPlan, resolve_augment, resolve_size

BACKENDS = ("dali", "torch")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_loader(shards, split: str = "train", backend: str = "dali", batch_size: int = 16, size=None,
                augment: str | bool | None = None, device=None, rank: int = 0, world_size: int = 1, seed: int = 0,
                return_keys: bool = False, workers: int | None = None, scale=(0.5, 1.0), vflip: bool = False,
                checksums: bool = True, shuffle: bool | None = None, channels_last: bool = False):
    """An iterable over batches with len() = batches per epoch, reusable for any number of epochs.

    shuffle: a new sample order every epoch (default: on for the train split, off for the others), whatever the
    augmentation. channels_last: the image batch comes in channels-last memory format (the layout a channels-last
    model reads), made so by the pipeline itself rather than by a copy.

    augment: "flip" (the default for the train split): a horizontal flip (and vertical with vflip) at the output
    size; "crop": a random scale-crop (area fraction in `scale`, aspect 3/4..4/3) resized to the output size and
    flipped; "none" (the default for other splits). Each draw is made once per sample for image and mask alike.
    """
    if backend not in BACKENDS:
        raise FastsegError(f"unknown loader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 0:
        raise FastsegError(f"workers must be 0 or more, not {workers}")
    if not 0 <= rank < world_size:
        raise FastsegError(f"rank {rank} is outside world size {world_size}")
    device = torch.device(device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastsegError("device 'cuda' asked for, but no CUDA device is visible; use device='cpu'")
    manifest = load_manifest(shards)
    manifest.split(split)
    paths, indexes = check_shards(shards, manifest, split, checksums)
    plan = LoaderPlan(
        root=shards, manifest=manifest, split=split, shards=paths, indexes=indexes, batch_size=batch_size,
        size=resolve_size(manifest, split, size), augment=resolve_augment(augment, split),
        scale=tuple(scale), vflip=vflip, rank=rank, world_size=world_size, seed=seed,
        workers=(os.cpu_count() or 1) if workers is None else workers, device=device,
        return_keys=return_keys, shuffle=split == "train" if shuffle is None else shuffle,
        channels_last=channels_last,
    )
    if plan.samples < world_size:
        raise FastsegError(f"the {split} split has {plan.samples} samples, fewer than the {world_size} ranks")
    if backend == "dali":
        from .dali_loader import DaliLoader

        return DaliLoader(plan)
    from .torch_loader import TorchLoader

    return TorchLoader(plan)


class SegDataModule(pl.LightningDataModule):
    """The loaders for training; rank, world size and device come from the Trainer.

    Its state (in every Lightning checkpoint) is the training loader's position on every rank: the epoch, the
    batches trained in it, and the backend's own state (DALI's pipeline checkpoint; nothing more for the twin), so
    a resumed run continues with the exact next batch."""

    def __init__(self, shards: str, backend: str = "dali", batch_size: int = 16, size=None, workers: int | None = None,
                 seed: int = 0, augment: str = "flip", scale=(0.5, 1.0), vflip: bool = False,
                 train_split: str = "train", val_split: str = "val", checksums: bool = True,
                 return_keys: bool = False, channels_last: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.manifest = load_manifest(shards)
        self.loaders = {}  # by role, "train" and "val": one split may serve both, each with its own loader
        self._pending = None  # a loader state loaded before the loaders were made

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        h = self.hparams
        for role, split, augment in (("train", h.train_split, h.augment), ("val", h.val_split, "none")):
            if split in self.manifest.splits and role not in self.loaders:
                self.loaders[role] = make_loader(
                    h.shards, split, h.backend, h.batch_size, h.size, augment, device, rank, world, h.seed,
                    workers=h.workers, scale=h.scale, vflip=h.vflip, checksums=h.checksums,
                    return_keys=h.return_keys and role == "train", shuffle=role == "train",
                    channels_last=h.channels_last)

    def train_dataloader(self):
        loader = self.loaders["train"]
        if self._pending is not None:
            loader.restore(self._pending)
            self._pending = None
        elif self.trainer is not None:
            loader.set_epoch(self.trainer.current_epoch)  # a checkpoint without loader state: go by the trainer
        return loader

    def val_dataloader(self):
        return self.loaders["val"]

    def state_dict(self) -> dict:
        loader = self.loaders.get("train")
        if loader is None or self.trainer is None:
            return {}
        # Lightning fetches one batch ahead: the position to save is that of the batches trained
        trained = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        state = loader.state(min(trained, loader.position) if loader.epoch == self.trainer.current_epoch else None)
        ranks = [state]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, state)  # every rank saves; rank 0 writes the file
        return {"loader": ranks, "world_size": len(ranks), "batch_size": self.hparams.batch_size,
                "backend": self.hparams.backend, "augment": self.hparams.augment, "seed": self.hparams.seed}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        world = self.trainer.world_size if self.trainer else 1
        h = self.hparams
        check_resumable(state, world, h.batch_size, h.backend, h.augment, h.seed)
        self._pending = state["loader"][self.trainer.global_rank if self.trainer else 0]


def check_resumable(state: dict, world_size: int, batch_size: int, backend: str, augment: str, seed: int) -> None:
    """A loader position is only exact for the world size, batch size, loader, augmentation and seed that made it."""
    wrote = {"rank(s)": (state["world_size"], world_size, "--devices/--num-nodes giving"),
             "batch size": (state["batch_size"], batch_size, "--batch-size"),
             "loader": (state["backend"], backend, "--loader"),
             "augmentation": (state.get("augment", augment), augment, "--augment"),
             "seed": (state.get("seed", seed), seed, "--seed")}
    differ = {name: v for name, v in wrote.items() if v[0] != v[1]}
    if differ:
        saved = ", ".join(f"{name} {was}" for name, (was, _, _) in differ.items())
        now = ", ".join(f"{name} {new}" for name, (_, new, _) in differ.items())
        fix = " ".join(f"{flag} {was}" for was, _, flag in differ.values())
        raise FastsegError(f"the checkpoint was written with {saved}; this run has {now}. Resume with {fix}, or "
                           "start a new run (--out elsewhere)")
