"""make_loader(): one batch contract over two backends, DALI ("dali") and a torch DataLoader ("torch").

The options are a LoaderConfig (config.py); the contract itself (slices, batches per epoch, padding, resumable
position) lives in contract.py, which both backends import; this module checks where the loader runs and picks a
backend.
"""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from ..errors import FastsegError
from ..sets import ShardSet, check_shards, cache_root, open_set
from ..settings import parse_size
from .cache import ShardCache
from .config import LoaderConfig
from .contract import LoaderPlan


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_loader(shards: str | os.PathLike | ShardSet, config: LoaderConfig | None = None, *, split: str = "train",
                device=None, rank: int = 0, world_size: int = 1, **options):
    """An iterable over batches with len() = batches per epoch, reusable for any number of epochs.

    shards: a folder, a prefix in an object store (s3://, gs://, az://, https://), or a ShardSet already opened
    (sets.open_set), whose manifest is then not read again. config: the loader options (LoaderConfig); keyword
    `options` replace its fields, so `make_loader("shards/", batch_size=8, augment="crop")` needs no config at
    all. Options left None are decided for the split: the output size from the manifest, flip augmentation and a
    new order every epoch for the train split (none and the manifest order for the others).
    """
    config = LoaderConfig.build(config, **options)
    if not 0 <= rank < world_size:
        raise FastsegError(f"rank {rank} is outside world size {world_size}")
    device = torch.device(device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastsegError("device 'cuda' asked for, but no CUDA device is visible; use device='cpu'")
    shard_set = open_set(shards)
    manifest = shard_set.manifest
    manifest.split(split)
    paths, indexes = check_shards(shard_set, split, config.checksums)
    plan = LoaderPlan(root=shard_set.root, manifest=manifest, split=split, shards=paths, indexes=indexes,
                      config=config.for_split(manifest, split, training=split == "train"), rank=rank,
                      world_size=world_size, device=device)
    if plan.streamed and config.caching:  # whole shards streamed into this machine's cache (cache.py, stream.py)
        limit = parse_size(config.cache_limit) if config.cache_limit is not None else None
        plan = replace(plan, cache=ShardCache(cache_root(config.cache), limit))
    if plan.samples < world_size:
        raise FastsegError(f"the {split} split has {plan.samples} samples, fewer than the {world_size} ranks")
    if config.backend == "dali":
        from .dali import DaliLoader

        return DaliLoader(plan)
    from .torch_backend import TorchLoader

    return TorchLoader(plan)
