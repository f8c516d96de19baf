"""make_loader(): one batch contract over two backends, DALI ("dali") and a torch DataLoader ("torch").

The contract itself (slices, batches per epoch, padding, resumable position) lives in contract.py, which both
backends import; this module only checks the arguments and picks a backend.
"""
from __future__ import annotations

import os

import torch

from ..errors import FastsegError
from ..format import ShardSet, open_set
from .checks import check_shards
from .contract import BACKENDS, LoaderPlan, resolve_augment, resolve_size


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_loader(shards: str | os.PathLike | ShardSet, *, split: str = "train", backend: str = "dali",
                batch_size: int = 16, size=None, augment: str | bool | None = None, device=None, rank: int = 0,
                world_size: int = 1, seed: int = 0, return_keys: bool = False, workers: int | None = None,
                scale=(0.5, 1.0), vflip: bool = False, checksums: bool = True, shuffle: bool | None = None,
                channels_last: bool = False):
    """An iterable over batches with len() = batches per epoch, reusable for any number of epochs.

    shards: a folder, an s3:// prefix, or a ShardSet already opened (format.open_set), whose manifest is then not
    read again.

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
    shard_set = open_set(shards)
    manifest = shard_set.manifest
    manifest.split(split)
    paths, indexes = check_shards(shard_set, split, checksums)
    plan = LoaderPlan(
        root=shard_set.root, manifest=manifest, split=split, shards=paths, indexes=indexes, batch_size=batch_size,
        size=resolve_size(manifest, split, size), augment=resolve_augment(augment, split),
        scale=tuple(scale), vflip=vflip, rank=rank, world_size=world_size, seed=seed,
        workers=(os.cpu_count() or 1) if workers is None else workers, device=device,
        return_keys=return_keys, shuffle=split == "train" if shuffle is None else shuffle,
        channels_last=channels_last,
    )
    if plan.samples < world_size:
        raise FastsegError(f"the {split} split has {plan.samples} samples, fewer than the {world_size} ranks")
    if backend == "dali":
        from .dali import DaliLoader

        return DaliLoader(plan)
    from .torch_backend import TorchLoader

    return TorchLoader(plan)
