"""SegDataModule: the loaders for Lightning, and the loader positions that its checkpoints hold."""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from ..errors import FastsegError
from ..format import ShardSet, open_set
from .make import make_loader


class SegDataModule(pl.LightningDataModule):
    """The loaders for training; rank, world size and device come from the Trainer.

    Its state (in every Lightning checkpoint) is the training loader's position on every rank: the epoch, the
    batches trained in it, and the backend's own state (DALI's pipeline checkpoint; nothing more for the torch
    loader), so a resumed run continues with the exact next batch."""

    def __init__(self, shards: str | ShardSet, *, backend: str = "dali", batch_size: int = 16, size=None,
                 workers: int | None = None, seed: int = 0, augment: str = "flip", scale=(0.5, 1.0),
                 vflip: bool = False, train_split: str = "train", val_split: str = "val", checksums: bool = True,
                 return_keys: bool = False, channels_last: bool = False):
        super().__init__()
        self.shard_set = open_set(shards)  # read once here (or by the caller) and handed to every loader
        self.save_hyperparameters(ignore=["shards"])
        self.hparams["shards"] = str(self.shard_set.root)
        self.manifest = self.shard_set.manifest
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
                    self.shard_set, split=split, backend=h.backend, batch_size=h.batch_size, size=h.size,
                    augment=augment, device=device, rank=rank, world_size=world, seed=h.seed,
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
    saved_vs_now = {"rank(s)": (state["world_size"], world_size, "--devices/--num-nodes giving"),
             "batch size": (state["batch_size"], batch_size, "--batch-size"),
             "loader": (state["backend"], backend, "--loader"),
             "augmentation": (state.get("augment", augment), augment, "--augment"),
             "seed": (state.get("seed", seed), seed, "--seed")}
    differ = {name: v for name, v in saved_vs_now.items() if v[0] != v[1]}
    if differ:
        saved = ", ".join(f"{name} {was}" for name, (was, _, _) in differ.items())
        now = ", ".join(f"{name} {new}" for name, (_, new, _) in differ.items())
        fix = " ".join(f"{flag} {was}" for was, _, flag in differ.values())
        raise FastsegError(f"the checkpoint was written with {saved}; this run has {now}. Resume with {fix}, or "
                           "start a new run (--out elsewhere)")
