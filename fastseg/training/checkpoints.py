"""Checkpoints that survive a kill: written beside the target and renamed into place, so a kill during the write
leaves the previous checkpoint intact; and the loader position a checkpoint holds, read before a resume starts."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from .. import storage
from ..errors import FastsegError
from ..sets import cache_root
from ..atomic import partial_path, sweep_stale


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)  # what a killed writer left
        tmp = partial_path(path)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: readers see the old file or the new one, never a part
        finally:
            tmp.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, memory-mapped: its weights are not read, so looking at its position or loader state
    costs a fraction of Lightning's own load."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:
        raise FastsegError(f"{path}: not a readable checkpoint ({err}); pass another one to --resume, "
                           "or start a new run") from err


def datamodule_state(path: Path) -> dict:
    """The SegDataModule state saved in a checkpoint ({} if it has none)."""
    return read_checkpoint(path).get("SegDataModule", {})


def local_checkpoint(where) -> Path:
    """A checkpoint on local disk: a path as it is; an object in a store (s3://, gs://, az://, https://) downloaded
    once into the cache (sets.cache_root: $FASTSEG_CACHE, else $XDG_CACHE_HOME/fastseg, else
    ~/.cache/fastseg), by its URL, and read from there."""
    name = hashlib.sha256(str(where).encode()).hexdigest()[:16] + "-" + str(where).rpartition("/")[2]
    return storage.cached(where, cache_root() / "checkpoints" / name,
                          missing=f"{where}: no such checkpoint in the store")
