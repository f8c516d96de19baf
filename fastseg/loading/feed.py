"""The DALI pipeline's feed (fn.external_source), with no DALI in it: for each batch in the order the contract gives,
the encoded members of its samples and each sample's parameters as the graph's operators take them (the draws of
draws.py, or the scoring sizes), or on the CPU the crop and mmseg recipes already executed (execute.py). dali.py
builds the graph that reads it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from ..format import META_EXT, RAW_SIZE_DTYPE, RAW_SIZE_EXT
from ..pictures import image_shape, member_pixels
from . import execute, recipe
from .contract import LoaderPlan
from .draws import COLOUR, flips, roi, sample_draws
from .members import SampleTable
from .stream import ShardStream
from .windows import inside, region, whole

# What the feed hands the graph per sample besides the members, by what the loader runs (LoaderConfig.mode): the
# draws as the executing operators take them, or the scoring sizes; each as its DALI type
PARAMETERS = {"flip": np.dtype(np.int32), "crop": np.dtype(np.float32), "mmseg": np.dtype(np.float32),
              "scoring": np.dtype(np.int64)}


EXECUTORS = {"crop": execute.crop, "mmseg": execute.mmseg}


def executed_in_feed(plan: LoaderPlan) -> bool:
    """The crop and mmseg recipes on the CPU run in the feed (execute.py, the torch loader's own steps): each sample
    decoded in its window and resampled there, on the feed's threads (libjpeg-turbo, zlib, OpenCV and Pillow release
    the GIL), overlapping DALI's own work on the batches before it; DALI then pads and normalizes. DALI's CPU
    resize, warp and colour operators take 10-30x OpenCV's time for the same pixels (benchmarks/dali_stages.py). On a
    GPU the graph decodes each region (mixed) and resamples there."""
    return plan.config.mode in ("crop", "mmseg") and plan.device.type != "cuda"


def uses_feed(plan: LoaderPlan) -> bool:
    """Whether the pipeline reads through the feed: whenever the order is shuffled, a sample has parameters, or the
    set is in an object store (its shard cache, or ranged reads: hedged and retried); DALI's own reader only for
    the plain manifest order on disk."""
    return bool(plan.config.shuffle) or plan.config.mode in PARAMETERS or plan.streamed


class SampleFeed(SampleTable):
    """The encoded members of each batch in the order the contract gives (LoaderPlan.padded_samples: a new
    permutation of the whole split every epoch when training), and each sample's parameters (PARAMETERS: the draws
    of draws.py, or the scoring sizes), for fn.external_source: DALI's webdataset reader can only shuffle inside a
    buffer over the order the shards were written in, and its random operators would draw other numbers than the
    torch loader. Called once per batch, in order, from batch `start` (counted over the epochs) on; a restored
    pipeline gets a feed that starts where its checkpoint stands. Reads from a bucket go out in parallel."""

    def __init__(self, plan: LoaderPlan, start: int = 0):
        super().__init__(plan)
        self._names = member_names(plan)
        self.batch = start
        self._epoch = self._padded = None
        # ranged reads from a store: each sample as its GET arrives; the recipes on the loader's threads
        threads = 16 if plan.ranged else max(1, plan.config.workers) if executed_in_feed(plan) else 0
        self._pool = ThreadPoolExecutor(threads) if threads else None
        self.stream = ShardStream(plan, plan.cache) if plan.cache else None  # whole shards, fetched ahead
        if self.stream:
            self.stream.prepare(*divmod(start, plan.batches))

    def _members(self, number: int) -> list[np.ndarray]:
        path, _, members = self.members[number]
        names = list(self._names)
        names[0] = self.plan.stored.image_in(members)  # the one of the image's alternatives this sample holds
        return [np.frombuffer(self.read(path, members[name]), RAW_SIZE_DTYPE if name == RAW_SIZE_EXT else np.uint8)
                for name in names]

    def parameters(self, number: int, epoch: int) -> np.ndarray:
        """Sample `number`'s parameters in `epoch`, as its pipeline's operators take them (flip, scoring; crop and
        mmseg on a GPU: _window_row)."""
        config = self.plan.config
        if config.mode == "scoring":
            rows, cols = self.shape(number)
            return np.array([*config.scoring_size(rows, cols), rows, cols], PARAMETERS["scoring"])
        return np.array(flips(sample_draws(config, epoch, number)), PARAMETERS["flip"])

    def _sample(self, number: int, epoch: int) -> list[np.ndarray]:
        config = self.plan.config
        if executed_in_feed(self.plan):  # the crop as the recipe makes it (mmseg: at most `size`; the graph pads)
            image, mask = EXECUTORS[config.mode](self, number, sample_draws(config, epoch, number))
            meta = [np.frombuffer(self.meta(number), np.uint8)] if config.return_keys else []
            return [image, mask[..., None], *meta]
        row = self._members(number)
        if config.mode in ("crop", "mmseg"):
            return self._window_row(row, number, sample_draws(config, epoch, number))
        return row + [self.parameters(number, epoch)] if config.mode in PARAMETERS else row

    def _window_row(self, row: list[np.ndarray], number: int, draws: np.ndarray) -> list[np.ndarray]:
        """crop and mmseg on a GPU: the members, the mmseg mask's crop in place of the mask, and as parameters the
        image's region to decode (windows.py), the window inside it, and the crop's mask window (relative) or the
        mmseg colour transform."""
        config, stored = self.plan.config, self.plan.stored
        size = row[2].tobytes() if stored.size else None
        rows, cols = image_shape(row[0].tobytes(), stored.raw_image and size)
        if config.mode == "crop":
            window = roi(draws) * np.array([rows, cols, rows, cols], np.float32)  # pixel edges, flips swapped
            out, extra = config.size, roi(draws)
        else:
            mask = member_pixels(row[1].tobytes(), stored.raw_mask and size, 1)
            labels, window = recipe.crop_geometry(mask, draws, config.base_size, config.size, config.cat_max_ratio)
            row[1], out, extra = labels[..., None], labels.shape, recipe.colour_transform(draws[COLOUR]).ravel()
        box = region(window, (rows, cols), out) if config.window_decode and not stored.raw_image else whole(rows, cols)
        return row + [np.array([box.top, box.left, box.bottom, box.right, *inside(window, box), *extra], PARAMETERS[config.mode])]

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
