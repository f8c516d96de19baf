"""make_loader(): one batch contract over two backends (DALI, or a torch DataLoader twin), and SegDataModule.

Epoch semantics, shared by both backends and matching DALI's webdataset reader: the split's samples (in manifest
order) are cut into `world_size` contiguous slices; in epoch e, rank r reads slice (r + e) % world_size, shuffled
when training. Every rank pads its epoch to ceil(longest slice / batch) batches by repeating its last sample, so
all ranks run the same number of steps; padded samples get an all-ignore mask, so they never count in a loss or
metric. Batches are {"image": float32 N×3×H×W normalized, "mask": int64 N×H×W (255 = ignore)} [+ "key"].
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from .errors import FastsegError
from .format import IGNORE_INDEX, Manifest, check_shards, load_manifest

BACKENDS = ("dali", "torch")


@dataclass
class LoaderPlan:
    """Everything a backend needs, resolved and checked once."""

    root: Path
    manifest: Manifest
    split: str
    shards: list[Path]
    batch_size: int
    size: tuple[int, int]  # (height, width)
    augment: bool
    scale: tuple[float, float]
    vflip: bool
    rank: int
    world_size: int
    seed: int
    workers: int
    device: torch.device
    return_keys: bool

    @property
    def samples(self) -> int:
        return self.manifest.splits[self.split].samples

    def slice(self, shard_id: int) -> range:
        """The samples of one rank slice, as DALI's reader cuts them."""
        n, w = self.samples, self.world_size
        return range(n * shard_id // w, n * (shard_id + 1) // w)

    @property
    def batches(self) -> int:
        longest = max(len(self.slice(s)) for s in range(self.world_size))
        return max(1, math.ceil(longest / self.batch_size))

    def epoch_slice(self, epoch: int) -> range:
        return self.slice((self.rank + epoch) % self.world_size)

    def mark_padding(self, mask: torch.Tensor, epoch: int, batch_index: int) -> torch.Tensor:
        """Set the masks of padded samples (past this rank's real samples for the epoch) to ignore."""
        first_pad = len(self.epoch_slice(epoch)) - batch_index * self.batch_size
        if first_pad < mask.shape[0]:
            mask[max(first_pad, 0):] = IGNORE_INDEX
        return mask

    @property
    def mean_std(self) -> tuple[list[float], list[float]]:
        return self.manifest.mean, self.manifest.std


def resolve_size(manifest: Manifest, split: str, size) -> tuple[int, int]:
    if size is not None:
        sides = [size] if isinstance(size, int) else list(size)
        if len(sides) not in (1, 2):
            raise FastsegError(f"an output size is H W or one number for a square, not {size!r}")
        height, width = sides * 2 if len(sides) == 1 else sides
        return int(height), int(width)
    sizes = manifest.sizes.get(split, [])
    if len(sizes) == 1:
        width, height = sizes[0]
        return height, width
    listed = ", ".join(f"{w}x{h}" for w, h in sizes[:5])
    raise FastsegError(f"the {split} split has images of {len(sizes)} sizes ({listed}); give an output size "
                       "(size=(H, W), or --image-size)")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_loader(shards, split: str = "train", backend: str = "dali", batch_size: int = 16, size=None,
                augment: bool | None = None, device=None, rank: int = 0, world_size: int = 1, seed: int = 0,
                return_keys: bool = False, workers: int | None = None, scale=(0.5, 1.0), vflip: bool = False,
                checksums: bool = True):
    """An iterable over batches with len() = batches per epoch, reusable for any number of epochs.

    augment defaults to True for the train split: random scale-and-crop (area fraction in `scale`) and
    horizontal flip (and vertical with vflip), drawn once per sample for image and mask alike.
    """
    if backend not in BACKENDS:
        raise FastsegError(f"unknown loader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not 0 <= rank < world_size:
        raise FastsegError(f"rank {rank} is outside world size {world_size}")
    device = torch.device(device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastsegError("device 'cuda' asked for, but no CUDA device is visible; use device='cpu'")
    manifest = load_manifest(shards)
    manifest.split(split)
    plan = LoaderPlan(
        root=Path(shards), manifest=manifest, split=split,
        shards=check_shards(shards, manifest, split, checksums), batch_size=batch_size,
        size=resolve_size(manifest, split, size), augment=(split == "train") if augment is None else augment,
        scale=tuple(scale), vflip=vflip, rank=rank, world_size=world_size, seed=seed,
        workers=workers or os.cpu_count() or 1, device=device,
        return_keys=return_keys,
    )
    if plan.samples < world_size:
        raise FastsegError(f"the {split} split has {plan.samples} samples, fewer than the {world_size} ranks")
    if backend == "dali":
        from .dali_loader import DaliLoader

        return DaliLoader(plan)
    from .torch_loader import TorchLoader

    return TorchLoader(plan)


class SegDataModule(pl.LightningDataModule):
    """The loaders for training; rank, world size and device come from the Trainer."""

    def __init__(self, shards: str, backend: str = "dali", batch_size: int = 16, size=None, workers: int | None = None,
                 seed: int = 0, scale=(0.5, 1.0), vflip: bool = False, train_split: str = "train",
                 val_split: str = "val", checksums: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.manifest = load_manifest(shards)
        self.loaders = {}

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        h = self.hparams
        for split, augment in ((h.train_split, True), (h.val_split, False)):
            if split in self.manifest.splits and split not in self.loaders:
                self.loaders[split] = make_loader(
                    h.shards, split, h.backend, h.batch_size, h.size, augment, device, rank, world, h.seed,
                    workers=h.workers, scale=h.scale, vflip=h.vflip, checksums=h.checksums)

    def train_dataloader(self):
        return self.loaders[self.hparams.train_split]

    def val_dataloader(self):
        return self.loaders[self.hparams.val_split]
