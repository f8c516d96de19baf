"""SegDataModule: the loaders for Lightning, and the loader positions that its checkpoints hold."""
from __future__ import annotations

from dataclasses import asdict, replace

import pytorch_lightning as pl
import torch

from ..errors import FastsegError
from ..sets import ShardSet, open_set
from .config import LoaderConfig
from .make import make_loader


class SegDataModule(pl.LightningDataModule):
    """The loaders for training; rank, world size and device come from the Trainer.

    Its state (in every Lightning checkpoint) is the training loader's position on every rank: the epoch, the
    batches trained in it, and the backend's own state (DALI's pipeline checkpoint; nothing more for the torch
    loader), so a resumed run continues with the exact next batch."""

    def __init__(self, shards: str | ShardSet, config: LoaderConfig | None = None, *, train_split: str = "train",
                 val_split: str = "val", val_options: dict | None = None, resume_checked: bool = False,
                 **options):
        """config (or keyword options that build one, as for make_loader) is the training loader's; validation
        reads the same way without augmentation or shuffling, with masks at the set's own resolution
        (original_labels, for scoring there), and with `val_options` (LoaderConfig fields) replaced: e.g.
        training.scoring.Scoring(...).loader_options(size). resume_checked: the caller has already checked that
        the checkpoint being resumed matches these options (fastseg-train does, before any process starts)."""
        super().__init__()
        self.shard_set = open_set(shards)  # read once here (or by the caller) and handed to every loader
        self.config = LoaderConfig.build(config, **options)
        self.train_split, self.val_split, self.resume_checked = train_split, val_split, resume_checked
        self.val_options = {"original_labels": True, **(val_options or {})}
        self.save_hyperparameters({"shards": str(self.shard_set.root), "train_split": train_split,
                                   "val_split": val_split, **asdict(self.config)})
        self.manifest = self.shard_set.manifest
        self.loaders = {}  # by role, "train" and "val": one split may serve both, each with its own loader
        self._pending = None  # a loader state loaded before the loaders were made

    def role_config(self, role: str) -> LoaderConfig:
        if role == "train":
            return self.config.for_split(self.manifest, self.train_split, training=True)
        size, scale = self.config.size, {}  # validation is resized as training is
        if self.train_split in self.manifest.splits:
            train = self.role_config("train")
            size = size or train.size
            if train.evaluation_scale:  # trained on crops of resized images: scored at the base size, aspect kept
                scale = {"size": train.evaluation_scale, "keep_ratio": True}
        quiet = replace(self.config, augment="none", shuffle=False, return_keys=False, size=size)
        options = {**scale, **self.val_options} if self.val_options.get("original_labels") else self.val_options
        return LoaderConfig.build(quiet, **options).for_split(self.manifest, self.val_split, training=False)

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        for role, split in (("train", self.train_split), ("val", self.val_split)):
            if split in self.manifest.splits and role not in self.loaders:
                self.loaders[role] = make_loader(self.shard_set, self.role_config(role), split=split, device=device,
                                                 rank=rank, world_size=world)

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
        train = loader.plan.config
        return {"loader": ranks, "world_size": len(ranks), "batch_size": train.batch_size,
                "backend": train.backend, "augment": train.augment, "seed": train.seed}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if not self.resume_checked:
            check_resumable(state, self.trainer.world_size if self.trainer else 1, self.role_config("train"))
        self._pending = state["loader"][self.trainer.global_rank if self.trainer else 0]


def check_resumable(state: dict, world_size: int, config: LoaderConfig) -> None:
    """A loader position is only exact for the world size, batch size, loader, augmentation and seed that made it
    (`config`: the training loader's, decided for its split)."""
    saved_vs_now = {"rank(s)": (state["world_size"], world_size, "--devices/--num-nodes giving"),
                    "batch size": (state["batch_size"], config.batch_size, "--batch-size"),
                    "loader": (state["backend"], config.backend, "--loader"),
                    "augmentation": (state.get("augment", config.augment), config.augment, "--augment"),
                    "seed": (state.get("seed", config.seed), config.seed, "--seed")}
    differ = {name: v for name, v in saved_vs_now.items() if v[0] != v[1]}
    if differ:
        saved = ", ".join(f"{name} {was}" for name, (was, _, _) in differ.items())
        now = ", ".join(f"{name} {new}" for name, (_, new, _) in differ.items())
        fix = " ".join(f"{flag} {was}" for was, _, flag in differ.values())
        raise FastsegError(f"the checkpoint was written with {saved}; this run has {now}. Resume with {fix}, or "
                           "start a new run (--out elsewhere)")
