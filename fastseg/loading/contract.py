"""The loader contract both backends import: the plan (split, slices, batches per epoch, padding rule) and the
epoch/position bookkeeping that makes a loader resumable.

Epoch semantics: when training (shuffle), each epoch is a new permutation of the whole split, cut into `world_size`
contiguous slices, rank r reading slice r (for a set streamed from a store into the shard cache, the first epoch
and every epoch of a split larger than the cache are a permutation of shards mixed within a window: order.py); otherwise, as DALI's webdataset reader reads, the split in manifest
order is cut into slices and in epoch e rank r reads slice (r + e) % world_size. Every
rank pads its epoch to ceil(longest slice / batch) batches by repeating its last sample, so all ranks run the same
number of steps; padded samples get an all-ignore mask, so they never count in a loss or metric. Batches are
{"image": float32 N×3×H×W normalized, "mask": int64 N×H×W (255 = ignore), "real": int} [+ "key"]; "real" counts
the real samples, which always come first (padding only ever fills the end of a batch), and is known on the host, so
counting what was trained never waits for the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .. import storage
from ..errors import FastsegError
from ..format import IGNORE_INDEX, Manifest, SampleMembers, sample_members
from .cache import ShardCache
from .config import LoaderConfig
from .order import shard_window_order


def batches_per_epoch(samples: int, world_size: int, batch_size: int) -> int:
    """Every rank takes as many batches as the longest rank slice needs."""
    return max(1, math.ceil(math.ceil(samples / world_size) / batch_size))


@dataclass
class LoaderPlan:
    """Everything a backend needs, resolved and checked once."""

    root: str | Path  # a folder, or a prefix in an object store
    manifest: Manifest
    split: str
    shards: list[str]  # paths, or URLs
    indexes: list[Path]  # the DALI index of each shard, on local disk
    config: LoaderConfig  # every option decided for this split (LoaderConfig.for_split)
    rank: int
    world_size: int
    device: torch.device
    cache: ShardCache | None = None  # a set in a store: the shard cache it streams into (None: ranged reads)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the output."""
        return self.config.size

    @property
    def samples(self) -> int:
        return self.manifest.splits[self.split].samples

    @cached_property
    def stored(self) -> SampleMembers:
        """The members each sample holds, by the set's storage: raw ones are reshaped, never decoded."""
        return sample_members(self.manifest.storage)

    @property
    def streamed(self) -> bool:
        """Whether the shards are in an object store (read through the shard cache, or by ranged reads)."""
        return any(storage.at(path).streamed for path in self.shards)

    @property
    def ranged(self) -> bool:
        """Whether members come by ranged reads from a store (no cache): best many in flight at once."""
        return self.streamed and self.cache is None

    @cached_property
    def shard_samples(self) -> list[int]:
        return [shard.samples for shard in self.manifest.split(self.split).shards]

    def windowed(self, epoch: int) -> bool:
        """Whether a shuffled epoch is a permutation of shards mixed within a window (order.py) rather than of the
        whole split: for a set streamed into the cache, in the first epoch (nothing need be local yet) and in every
        epoch where the split is larger than the cache's limit."""
        split_bytes = sum(shard.bytes for shard in self.manifest.split(self.split).shards)
        return self.cache is not None and (epoch == 0 or split_bytes > self.cache.limit)

    @property
    def native(self) -> bool:
        """Every image of the split already has the output size: without a crop there is nothing to resample."""
        return self.manifest.sizes.get(self.split) == [[self.size[1], self.size[0]]]

    def rank_slice(self, shard_id: int) -> range:
        """The samples of one rank slice, as DALI's reader cuts them."""
        n, w = self.samples, self.world_size
        return range(n * shard_id // w, n * (shard_id + 1) // w)

    @property
    def batches(self) -> int:
        return batches_per_epoch(self.samples, self.world_size, self.batch_size)

    def epoch_slice(self, epoch: int) -> range:
        """Without shuffling: the manifest-order slice this rank reads in `epoch`."""
        return self.rank_slice((self.rank + epoch) % self.world_size)

    def epoch_samples(self, epoch: int) -> list[int]:
        """The split's sample numbers this rank reads in `epoch`, in order. Shuffled: a new permutation of the whole
        split every epoch (seeded by seed and epoch, the same on every rank; windowed where `windowed`), cut into
        the rank slices, so that ranks stay disjoint and complete and every sample can meet any other. Otherwise the
        manifest order."""
        if not self.config.shuffle:
            return list(self.epoch_slice(epoch))
        own = self.rank_slice(self.rank)
        rng = np.random.default_rng((self.config.seed, epoch))
        order = shard_window_order(rng, self.shard_samples) if self.windowed(epoch) else rng.permutation(self.samples)
        return order[own.start:own.stop].tolist()

    def padded_samples(self, epoch: int) -> list[int]:
        """epoch_samples padded to whole batches by repeating the last sample: what both backends load, in order."""
        samples = self.epoch_samples(epoch)
        return samples + samples[-1:] * (self.batches * self.batch_size - len(samples))

    def epoch_length(self, epoch: int) -> int:
        return len(self.rank_slice(self.rank) if self.config.shuffle else self.epoch_slice(epoch))

    def real_samples(self, epoch: int, batch_index: int) -> int:
        """How many samples of a batch are this rank's own; the rest of the batch is padding."""
        left = self.epoch_length(epoch) - batch_index * self.batch_size
        return min(max(left, 0), self.batch_size)

    def mark_padding(self, mask: torch.Tensor, epoch: int, batch_index: int) -> torch.Tensor:
        """Set the masks of padded samples (past this rank's real samples for the epoch) to ignore."""
        real = self.real_samples(epoch, batch_index)
        if real < mask.shape[0]:
            mask[real:] = IGNORE_INDEX
        return mask

    @property
    def mean_std(self) -> tuple[list[float], list[float]]:
        return self.manifest.mean, self.manifest.std


class Normalize:
    """uint8 (or float) N×3×H×W pixels → float32 normalized by the manifest's per-channel mean/std, in whatever
    memory layout they come (a channels-last view stays channels-last). The constants are made once, on the
    device: a tensor made per batch would be a host-to-device copy, and a sync, every step."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Into a new tensor, or into `out` (float32, the images' shape): copied in first, since an op that promotes
        uint8 to float into `out` makes a float temporary of the input, the allocation `out` is there to avoid."""
        if out is None:
            return images.float().sub_(self.mean).div_(self.std)
        return out.copy_(images).sub_(self.mean).div_(self.std)


class EpochLoader:
    """What both backends share: len() = batches per epoch, and where the loader stands (epoch, batches taken).

    Iterating starts the next epoch; an epoch left early (Lightning's sanity check takes two batches) is finished
    first, so the reader stays in step with the epoch count. A loader restored from `state()` continues its epoch
    from the exact next batch. Backends implement `_epoch(epoch, start)` (yield the batches from `start` on) and
    may override `_finish(epoch, start)` (discard the rest of an abandoned epoch) and `_snapshot()`/`_seek()`.
    """

    def __init__(self, plan: LoaderPlan):
        self.plan = plan
        self.epoch = 0  # the epoch the loader is in
        self.position = 0  # batches of that epoch already taken
        self._continue = True  # the next iteration continues this epoch (a new or restored loader)
        self._snapshots = {}  # position -> backend state right after that many batches of the current epoch

    def __len__(self) -> int:
        return self.plan.batches

    @property
    def next_epoch(self) -> int:
        """The epoch the next iteration yields."""
        return self.epoch if self._continue and self.position < len(self) else self.epoch + 1

    def __iter__(self):
        if self.next_epoch != self.epoch:
            self._finish(self.epoch, self.position)
            self.epoch, self.position, self._snapshots = self.epoch + 1, 0, {}
        self._continue = False
        self._record()
        epoch = self.epoch
        for batch in self._epoch(epoch, self.position):
            batch["real"] = self.plan.real_samples(epoch, self.position)
            self.position += 1
            self._record()
            yield batch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield `epoch` (the trainer's). The torch loader jumps there; DALI's reader can only
        reach a later epoch by reading on, and never an earlier one."""
        if epoch == self.next_epoch:
            return
        if not self._seekable:
            if epoch < self.next_epoch:
                raise FastsegError(f"the {self.plan.split} loader is at epoch {self.next_epoch} and cannot go back "
                                   f"to epoch {epoch}; restore it from a checkpoint instead")
            while self.next_epoch < epoch:
                for _ in self:
                    pass
        self.epoch, self.position, self._continue, self._snapshots = epoch, 0, True, {}

    _seekable = False  # True where any (epoch, position) can be reached without reading up to it

    def state(self, taken: int | None = None) -> dict:
        """Where the loader stands after `taken` batches of its current epoch (default: all it has yielded).

        Lightning fetches a batch ahead of the step it trains, so a checkpoint asks for the position of the
        batches actually trained, which may be one behind the loader's own."""
        taken = self.position if taken is None else taken
        if taken not in self._snapshots:
            raise FastsegError(f"no loader state kept for batch {taken} of epoch {self.epoch} "
                               f"(the loader stands at batch {self.position})")
        return {"epoch": self.epoch, "position": taken, "backend": self._snapshots[taken]}

    def restore(self, state: dict) -> None:
        self.epoch, self.position, self._continue = state["epoch"], state["position"], True
        self._seek(state)
        self._snapshots = {self.position: state["backend"]}

    def _record(self) -> None:
        self._snapshots[self.position] = self._snapshot()
        for old in [p for p in self._snapshots if p < self.position - 4]:  # a few behind cover any prefetch
            del self._snapshots[old]

    def _epoch(self, epoch: int, start: int):
        raise NotImplementedError

    def _finish(self, epoch: int, start: int) -> None:
        """Discard the batches of `epoch` from `start` on (nothing to do where the reader has no position)."""

    def _snapshot(self):
        return None

    def _seek(self, state: dict) -> None:
        """Put the backend where `state` says (the bookkeeping above is already set)."""
