"""The DALI pipeline's feed (fn.external_source), with no DALI in it: for each batch in the order the contract gives,
the encoded members of its samples and each sample's graph parameters (its job's: job.py), or on the CPU, for a job
that runs there, the samples its CPU executor made. dali.py builds the graph that reads it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from ..format import META_EXT, RAW_SIZE_DTYPE, RAW_SIZE_EXT
from ..pictures import image_shape, member_pixels
from .contract import LoaderPlan
from .jobs import job_for, sample_draws
from .members import SampleTable
from .stream import ShardStream


def executed_in_feed(plan: LoaderPlan) -> bool:
    """A job that runs on the CPU in the feed (crop, mmseg, rotate: its CPU executor, the torch loader's own steps):
    each sample decoded (in its window) and resampled there, on the feed's threads (libjpeg-turbo, zlib, OpenCV and
    Pillow release the GIL), overlapping DALI's own work on the batches before it; DALI then pads and normalizes.
    DALI's CPU resize, warp and colour operators take many times OpenCV's time for the same pixels
    (benchmarks/dali_stages.py). On a GPU the graph runs the job."""
    return job_for(plan.config).in_feed_on_cpu and plan.device.type != "cuda"


def uses_feed(plan: LoaderPlan) -> bool:
    """Whether the pipeline reads through the feed: whenever the order is shuffled, a sample has parameters, or the
    set is in an object store (its shard cache, or ranged reads: hedged and retried); DALI's own reader only for
    the plain manifest order on disk."""
    return bool(plan.config.shuffle) or job_for(plan.config).parameters is not None or plan.streamed


class SampleFeed(SampleTable):
    """The encoded members of each batch in the order the contract gives (LoaderPlan.padded_samples: a new
    permutation of the whole split every epoch when training), and each sample's parameters, for
    fn.external_source: DALI's webdataset reader can only shuffle inside a buffer over the order the shards were
    written in, and its random operators would draw other numbers than the torch loader. Called once per batch, in
    order, from batch `start` (counted over the epochs) on; a restored pipeline gets a feed that starts where its
    checkpoint stands. Reads from a bucket go out in parallel."""

    def __init__(self, plan: LoaderPlan, start: int = 0):
        super().__init__(plan)
        self.job = job_for(plan.config)
        self.in_feed = executed_in_feed(plan)
        self._names = member_names(plan)
        self.batch = start
        self._epoch = self._padded = None
        # ranged reads from a store: each sample as its GET arrives; the jobs' CPU executors on the loader's threads
        threads = 16 if plan.ranged else max(1, plan.config.workers) if self.in_feed else 0
        self._pool = ThreadPoolExecutor(threads) if threads else None
        self.stream = ShardStream(plan, plan.cache) if plan.cache else None  # whole shards, fetched ahead
        if self.stream:
            self.stream.prepare(*divmod(start, plan.batches))

    @property
    def windowed(self) -> bool:
        """Whether a GPU graph decodes only a window's region of an image (an encoded one, window_decode on)."""
        return self.plan.config.window_decode and not self.plan.stored.raw_image

    def row_shape(self, row: list[np.ndarray]) -> tuple[int, int]:
        """(rows, columns) of the image of a sample's members, without decoding it."""
        stored = self.plan.stored
        return image_shape(row[0].tobytes(), stored.raw_image and stored.size and row[2].tobytes())

    def row_mask(self, row: list[np.ndarray]) -> np.ndarray:
        """The mask of a sample's members, decoded (H×W)."""
        stored = self.plan.stored
        return member_pixels(row[1].tobytes(), stored.raw_mask and stored.size and row[2].tobytes(), 1)

    def _members(self, number: int) -> list[np.ndarray]:
        path, _, members = self.members[number]
        names = list(self._names)
        names[0] = self.plan.stored.image_in(members)  # the one of the image's alternatives this sample holds
        return [np.frombuffer(self.read(path, members[name]), RAW_SIZE_DTYPE if name == RAW_SIZE_EXT else np.uint8)
                for name in names]

    def _sample(self, number: int, epoch: int) -> list[np.ndarray]:
        draws = sample_draws(self.plan.config, epoch, number)
        if self.in_feed:  # as the job's CPU executor makes it (mmseg: at most `size`; the graph pads)
            sample = self.job.cpu(self, number, draws)
            meta = [np.frombuffer(self.meta(number), np.uint8)] if self.plan.config.return_keys else []
            return [sample.image, sample.mask[..., None], *meta]
        return self.job.feed_row(self, number, draws, self._members(number))

    def __call__(self):
        epoch, position = divmod(self.batch, self.plan.batches)
        self.batch += 1
        size = self.plan.batch_size
        if epoch != self._epoch:
            self._epoch, self._padded = epoch, self.plan.padded_samples(epoch)
        chosen = self._padded[position * size:(position + 1) * size]
        if self.stream:
            self.stream.ready(epoch, position)
        # without a cache: this batch's samples and the next's requested together (SampleTable.fetch)
        self.fetch(chosen, self._padded[(position + 1) * size:(position + 2) * size])
        rows = (list(self._pool.map(partial(self._sample, epoch=epoch), chosen)) if self._pool else
                [self._sample(number, epoch) for number in chosen])
        return tuple(list(column) for column in zip(*rows))


def member_names(plan: LoaderPlan) -> list[str]:
    """The members the pipeline reads, in order: image (its alternatives joined by ';', as DALI's reader takes
    them), mask, the size where the set stores pixels, and with keys the meta."""
    stored = plan.stored
    names = [";".join(stored.images), stored.mask] + ([stored.size] if stored.size else [])
    return names + ([META_EXT] if plan.config.return_keys else [])
