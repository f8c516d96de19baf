"""The torch backend (`backend="torch"`): the batch contract and epoch semantics of the DALI pipeline, in a plain
torch DataLoader.

Samples are read by offset through the same DALI index files (no tar scan) and turned into pixels by the sample
layer (members.py: JPEG with simplejpeg, PNG with Pillow, raw members viewed); the workers then execute the
sample's draws (draws.py, the same parameters the DALI pipeline is handed) as uint8: crop, resize and flip, or the
mmseg recipe. Images are normalized on the target device in the main process (on the CPU into reused buffers:
HostBuffers). Its position is (epoch, batch index) alone: every draw is a function of (seed, epoch, sample), so a
restored loader skips the batches already trained without decoding them.
"""
from __future__ import annotations

import weakref
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import FastsegError
from ..format import IGNORE_INDEX
from ..processes import quiet_when_orphaned, workers_starting
from .contract import EpochLoader, LoaderPlan, Normalize
from .jobs import job_for, sample_draws
from .members import SampleTable
from .stream import ShardStream


class ShardSamples(SampleTable, Dataset):
    """Sample i of the split (manifest order) in epoch e, as its job's CPU executor makes it (job.py): a uint8 CHW
    (or HWC) image and an HW mask, its key, and where the job's samples carry them, their sizes."""

    def __init__(self, plan: LoaderPlan):
        super().__init__(plan)
        self.job = job_for(plan.config)

    def __getitems__(self, items: list[tuple[int, int]]) -> list:
        """A batch's samples (the DataLoader's batched fetch): from a store, their members are read together first."""
        self.fetch([number for number, _ in items])
        return [self[item] for item in items]

    def __getitem__(self, item: tuple[int, int]):
        number, epoch = item
        sample = self.job.cpu(self, number, sample_draws(self.plan.config, epoch, number))
        # channels first is a view here; the collate's stack makes the one copy (else the main process takes an
        # N×C×H×W view of the H×W×C batch: no copy at all)
        image = torch.from_numpy(np.asarray(sample.image))
        image = image if self.plan.config.channels_last else image.permute(2, 0, 1)
        found = (image, torch.from_numpy(np.asarray(sample.mask)), self.members[number][1])
        return (*found, sample.sizes) if self.job.sized else found


def collate_padded(samples: list, channels_last: bool, least: tuple[int, int] = (0, 0)) -> tuple:
    """Samples of different sizes as one batch: images padded at the bottom and right with 0 (zeroed again after
    normalization), masks with ignore, to the largest in the batch (and at least `least`); with the real sizes."""
    images, masks, keys, sizes = zip(*samples)
    rows = max(least[0], *(size[0] for size in sizes)), max(least[0], *(size[2] for size in sizes))
    cols = max(least[1], *(size[1] for size in sizes)), max(least[1], *(size[3] for size in sizes))
    shape = (len(images), rows[0], cols[0], 3) if channels_last else (len(images), 3, rows[0], cols[0])
    image_batch = torch.zeros(shape, dtype=torch.uint8)
    mask_batch = torch.full((len(masks), rows[1], cols[1]), IGNORE_INDEX, dtype=torch.uint8)
    for i, (image, mask, (height, width, _, _)) in enumerate(zip(images, masks, sizes)):
        if channels_last:
            image_batch[i, :height, :width] = image
        else:
            image_batch[i, :, :height, :width] = image
        mask_batch[i, :mask.shape[0], :mask.shape[1]] = mask
    return image_batch, mask_batch, keys, list(sizes)


def zero_padding(images: torch.Tensor, sizes) -> None:
    """Normalized N×C×H×W images: 0 past each one's own rows and columns (the first two of each size), as the DALI
    pipeline pads them."""
    for image, (height, width, *_) in zip(images, sizes):
        image[:, height:] = 0
        image[:, :, width:] = 0


class RankEpochSampler(Sampler):
    """This rank's samples for one epoch, padded to whole batches (LoaderPlan.padded_samples), each with the epoch
    its draws are made for; from batch `start` on. For a set streamed into the shard cache, a batch is handed to the
    workers once its shards are local (ShardStream.ready), those of the batches handed out before it kept."""

    def __init__(self, plan: LoaderPlan, stream: ShardStream | None = None):
        self.plan, self.epoch, self.start, self.stream = plan, 0, 0, stream

    def __len__(self) -> int:
        return (self.plan.batches - self.start) * self.plan.batch_size

    def __iter__(self):
        size, indices = self.plan.batch_size, self.plan.padded_samples(self.epoch)
        for batch in range(self.start, self.plan.batches):
            if self.stream:
                self.stream.ready(self.epoch, batch)
            yield from ((i, self.epoch) for i in indices[batch * size:(batch + 1) * size])


class HostBuffers:
    """Batch tensors for the CPU device, each reused once the caller holds no tensor of it any more, as DALI reuses
    its outputs. A fresh float32 batch (79 MB at 16 x 480 x 854) costs more in first-touch page faults than the
    normalization that fills it. Each buffer is a numpy array lent to torch through a
    view of it: torch keeps that view alive while any tensor shares its memory (slices and views included), so a
    dead weak reference to the view means the caller has let go of every one. With all buffers held, a batch gets
    fresh memory."""

    def __init__(self, slots: int = 4):
        self.slots = slots
        self.lent: list[tuple[np.ndarray, weakref.ref]] = []

    def take(self, shape: tuple[int, ...], dtype) -> torch.Tensor:
        for slot, (array, view) in enumerate(self.lent):
            if view() is None and array.shape == shape and array.dtype == dtype:
                return self._lend(slot, array)
        array = np.empty(shape, dtype)
        if len(self.lent) < self.slots:
            self.lent.append((array, None))
            return self._lend(len(self.lent) - 1, array)
        return torch.from_numpy(array)

    def _lend(self, slot: int, array: np.ndarray) -> torch.Tensor:
        view = array.view()
        self.lent[slot] = (array, weakref.ref(view))
        return torch.from_numpy(view)


class TorchLoader(EpochLoader):
    """The torch backend: a DataLoader whose sampler hands out this rank's sample numbers in the epoch's order (the
    plan's) and whose workers read, decode and augment each sample through the sample layer, batched; the batch is
    normalized on the device, from pinned memory where that is CUDA."""

    _seekable = True

    def __init__(self, plan: LoaderPlan):
        super().__init__(plan)
        cuda = plan.device.type == "cuda"
        workers = plan.config.workers
        prefetch = 4 if workers else None
        job = job_for(plan.config)
        # the batches the DataLoader hands its workers ahead keep their shards
        stream = ShardStream(plan, plan.cache, lag=workers * prefetch + 1 if workers else 0) if plan.cache else None
        if stream:
            stream.prepare(0, 0)  # the first shards on their way at once
        self.order = RankEpochSampler(plan, stream)
        self.loader = DataLoader(
            ShardSamples(plan), batch_size=plan.batch_size, sampler=self.order, num_workers=workers,
            pin_memory=cuda, persistent_workers=workers > 0, prefetch_factor=prefetch,
            worker_init_fn=quiet_when_orphaned,
            # a job's samples with sizes: padded to the largest, and at least to what the job says (Job.padded_to)
            collate_fn=partial(collate_padded, channels_last=plan.config.channels_last,
                               least=job.padded_to(plan.config)) if job.sized else None,
        )
        self.normalize = Normalize(*plan.mean_std, device=plan.device)
        self.buffers = HostBuffers() if plan.device.type == "cpu" else None

    @property
    def dataset(self) -> ShardSamples:
        """The Dataset its workers read: sample i of the split, by offset (`members` lists where each one is)."""
        return self.loader.dataset

    def _iterate(self):
        """The DataLoader's iterator; its persistent workers start on the first call, forked where that is safe
        (processes.py)."""
        if not self.plan.config.workers:
            return iter(self.loader)
        with workers_starting() as context:
            self.loader.multiprocessing_context = context
            return iter(self.loader)

    def _epoch(self, epoch: int, start: int):
        self.order.epoch, self.order.start = epoch, start
        try:
            yield from self._batches(epoch, start)
        except FastsegError as err:  # from a worker it carries the worker's traceback: keep the message only
            raise FastsegError(str(err).strip().splitlines()[-1].rpartition("FastsegError: ")[2]) from None

    def _batches(self, epoch: int, start: int):
        reports_sizes = self.loader.dataset.job.reports_sizes
        for index, (image, mask, keys, *sizes) in enumerate(self._iterate(), start):
            image = image.to(self.plan.device, non_blocking=True)
            if self.plan.config.channels_last:
                image = image.permute(0, 3, 1, 2)  # a channels-last view; the float32 output keeps the layout
            if self.buffers is None:  # on a GPU: the caching allocator reuses memory already
                image, mask = self.normalize(image), mask.to(self.plan.device, non_blocking=True).long()
            else:
                out = self.buffers.take(tuple(image.permute(0, 2, 3, 1).shape) if self.plan.config.channels_last
                                        else tuple(image.shape), np.float32)
                image = self.normalize(image, out=out.permute(0, 3, 1, 2) if self.plan.config.channels_last else out)
                mask = self.buffers.take(tuple(mask.shape), np.int64).copy_(mask)
            batch = {"image": image, "mask": self.plan.mark_padding(mask, epoch, index)}
            if sizes:
                zero_padding(image, sizes[0])
                if reports_sizes:
                    batch["sizes"] = sizes[0]
            if self.plan.config.return_keys:
                batch["key"] = list(keys)
            yield batch
