"""The DALI pipeline (the only module that imports nvidia.dali) and a thin epoch-exact iterator over it; what the
pipeline reads when it does not read the shards itself comes from its feed (feed.py).

DALI's webdataset reader never stops at an epoch end: it wraps around and moves each rank to the next slice.
So the iterator counts batches itself (LoaderPlan.batches per epoch, bookkeeping in contract.EpochLoader) instead of
relying on DALI's generic iterator, whose len() and reset behaviour are easy to get wrong under Lightning.

The pipeline runs on DALI's dynamic executor, which hands each output buffer to torch without a copy (DLPack) and
keeps it alive for as long as torch holds it; masks leave the pipeline as int64 already, so the main thread does
no per-pixel work at all. Checkpointing is on: the reader's position and the random operators' state after any
batch can be saved and restored (EpochLoader.state()).
"""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import torch

from ..errors import FastsegError
from ..format import IGNORE_INDEX, RAW_SIZE_EXT
from ..processes import note_native_threads
from .contract import EpochLoader, LoaderPlan
from .feed import SampleFeed, member_names, uses_feed
from .jobs import job_for
from .members import SampleTable

# What fastseg calls needs this DALI: the dynamic executor handing out zero-copy outputs that stay valid while
# held, pipeline checkpoints of the webdataset reader and run(stream). Tested with 2.4.
DALI_FLOOR = (2, 4)
try:
    import nvidia.dali
    from nvidia.dali import fn, pipeline_def, types
except ImportError as err:  # pragma: no cover - depends on the install
    raise FastsegError("NVIDIA DALI is not installed: pip install nvidia-dali-cuda120 (or -cuda130), "
                       "or use the torch backend (--loader torch)") from err


def check_dali_version(version: str) -> None:
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < DALI_FLOOR:
        floor = ".".join(map(str, DALI_FLOOR))
        raise FastsegError(f"NVIDIA DALI {version} is installed; fastseg needs {floor} or newer: "
                           f"pip install -U 'nvidia-dali-cuda120>={floor}' (or -cuda130), or use --loader torch")


check_dali_version(nvidia.dali.__version__)

__all__ = ["DALI_FLOOR", "DaliLoader", "build_pipeline", "check_dali_version", "segmentation_pipeline"]


class Ops:
    """The DALI operators the sample jobs' graphs are written with (job.py), for one plan on its device: a job's
    module says which steps a sample goes through, and this class how each runs, so that nothing outside this module
    imports DALI."""

    def __init__(self, plan: LoaderPlan, gpu: bool):
        self.plan, self.gpu = plan, gpu

    def on_device(self, node):
        """A CPU node moved to the GPU where the pipeline runs there."""
        return node.gpu() if self.gpu and node.device == "cpu" else node

    def decode(self, image, mask, size=None):
        """Images (RGB, on the GPU with `mixed` decoding there) and masks (one channel, on the CPU), both H×W×C. Raw
        members are only reshaped by their sample's size member: no decode, and on a GPU a raw image goes there as
        it is. Either may be None: not asked for."""
        stored = self.plan.stored
        if image is not None and stored.raw_image:
            image = _reshaped(image, size, None if stored.grey else 3)
            if stored.grey:  # a grey image's one channel broadcast to three (an RGB image's three are kept)
                image = image * types.Constant(np.ones(3, np.uint8), device="cpu")
            image = image.gpu() if self.gpu else image
        elif image is not None:
            image = fn.decoders.image(image, device="mixed" if self.gpu else "cpu", output_type=types.RGB)
        if mask is not None:
            mask = (_reshaped(mask, size, 1) if stored.raw_mask else
                    fn.decoders.image(mask, device="cpu", output_type=types.GRAY))
        return image, mask

    def region_decoded(self, image, size, region):
        """The region of each image a job chose (top, left, bottom, right: windows.py) decoded alone: region
        decoding on `mixed` (nvJPEG) or `cpu` (libjpeg-turbo), with the CPU's chroma upsampling on the GPU too. A raw
        image (its region is the whole image) is only reshaped."""
        if self.plan.stored.raw_image:
            return self.decode(image, None, size)[0]
        return fn.decoders.image_slice(image, start=fn.cast(region[0:2], dtype=types.INT32),
                                       end=fn.cast(region[2:4], dtype=types.INT32), axis_names="HW",
                                       device="mixed" if self.gpu else "cpu", output_type=types.RGB,
                                       jpeg_fancy_upsampling=True)

    def resize(self, image, mask, size, image_window: dict | None = None, mask_window: dict | None = None):
        """The one resampling rule of both backends (and of fastseg-predict): bilinear at pixel centres, antialiased
        when shrinking, which is what Pillow's BILINEAR does in the torch loader; each from its window (a resize
        ROI) where one is given. DALI's antialias=False is faster on the CPU crop path, but a model trained through
        one backend and scored through the other would then see other pixels."""
        # straight to float: faster than a uint8 result, and normalize reads it as is
        image = fn.resize(image, size=list(size), interp_type=types.INTERP_LINEAR, antialias=True,
                          dtype=types.FLOAT, **(image_window or {}))
        mask = fn.resize(mask, size=list(size), interp_type=types.INTERP_NN, **(mask_window or {}))  # no new classes
        return image, mask

    def resample_like(self, image, mask, window):
        """The image resampled from `window` (pixel edges) to the mask's size, bilinearly without antialiasing."""
        return fn.resize(image, size=fn.cast(mask.shape()[0:2], dtype=types.FLOAT), roi_start=window[0:2],
                         roi_end=window[2:4], roi_relative=False, interp_type=types.INTERP_LINEAR, antialias=False)

    def colour(self, image, transform):
        """Each pixel's colour through the 3×4 affine `transform` ([M | t], row-major), kept uint8."""
        affine = fn.reshape(transform, shape=[3, 4])
        return fn.coord_transform(image, M=affine[:, 0:3], T=affine[:, 3], dtype=types.UINT8)

    def flip(self, node, horizontal, vertical):
        return fn.flip(node, horizontal=horizontal, vertical=vertical)

    def warp(self, image, mask, matrix, size):
        """Image and mask through the affine `matrix` (an output pixel to the source point it reads, DALI's pixel
        convention) at `size`: the image bilinearly, filled with 0; the mask by nearest neighbour, filled with
        ignore."""
        matrix = fn.reshape(matrix, shape=[2, 3])
        image = fn.warp_affine(image, matrix=matrix, size=list(size), interp_type=types.INTERP_LINEAR, fill_value=0,
                               inverse_map=True)
        mask = fn.warp_affine(mask, matrix=matrix, size=list(size), interp_type=types.INTERP_NN,
                              fill_value=IGNORE_INDEX, inverse_map=True)
        return image, mask

    def normalize(self, image, mask, mirror=0):
        """Normalized images (mirrored horizontally where `mirror`, for free) and H×W masks."""
        mean, std = self.plan.mean_std
        image = fn.crop_mirror_normalize(image, mirror=mirror, mean=mean, std=std, dtype=types.FLOAT,
                                         output_layout=self._layout)
        return image, fn.squeeze(mask, axis_names="C")

    def normalize_into(self, image, mask, size):
        """Normalized images and (uint8, H×W) masks of exactly `size`, padded at the bottom and right where smaller:
        the image with 0 after normalization, the mask with ignore."""
        mean, std = self.plan.mean_std
        image = fn.crop_mirror_normalize(image, crop=list(size), crop_pos_x=0.0, crop_pos_y=0.0,
                                         out_of_bounds_policy="pad", fill_values=0.0, mean=mean, std=std,
                                         dtype=types.FLOAT, output_layout=self._layout)
        mask = fn.crop(mask, crop=list(size), crop_pos_x=0.0, crop_pos_y=0.0, out_of_bounds_policy="pad",
                       fill_values=IGNORE_INDEX)
        return image, fn.squeeze(mask, axis_names="C")

    def for_scoring(self, image, mask, sizes):
        """Scoring at the labels' resolution: the image resized to its scoring size (`sizes`: image rows, columns,
        label rows, columns per sample), normalized, padded with 0 to the batch's largest; the mask as decoded,
        padded with ignore; and the sizes."""
        if self.plan.config.keep_ratio or not self.plan.native:
            image = fn.resize(image, size=fn.cast(sizes[0:2], dtype=types.FLOAT), interp_type=types.INTERP_LINEAR,
                              antialias=True, dtype=types.FLOAT)
        mean, std = self.plan.mean_std
        image = fn.crop_mirror_normalize(image, mean=mean, std=std, dtype=types.FLOAT, output_layout=self._layout)
        image = fn.pad(image, fill_value=0.0, axis_names="HW")
        mask = fn.pad(fn.squeeze(mask, axis_names="C"), fill_value=IGNORE_INDEX, axis_names="HW")
        return image, self.on_device(mask), sizes

    @property
    def _layout(self) -> str:
        return "HWC" if self.plan.config.channels_last else "CHW"


# the DALI type of each kind of per-sample parameters the feed hands the graph (a job's Record)
DALI_TYPES = {np.dtype(np.int32): types.INT32, np.dtype(np.float32): types.FLOAT, np.dtype(np.int64): types.INT64}


def _read(plan: LoaderPlan, feed: SampleFeed | None):
    """The stored members of each sample (member_names), and where the feed has them its parameters: from the feed
    when it is used (uses_feed), else from DALI's webdataset reader in manifest order (a set on disk). A raw set's
    size member is int32."""
    names = member_names(plan)
    dtypes = [types.INT32 if name == RAW_SIZE_EXT else types.UINT8 for name in names]
    if feed is not None and feed.in_feed:  # the job's samples, HWC, and with keys the meta
        count = 3 if plan.config.return_keys else 2
        return fn.external_source(source=feed, num_outputs=count, batch=True, dtype=[types.UINT8] * count,
                                  layout=["HWC", "HWC", ""][:count])
    if feed is not None:
        job = feed.job
        dtypes += [DALI_TYPES[job.parameters.dtype]] if job.parameters else []
        layouts = [""] * len(dtypes)
        layouts[1] = job.mask_layout  # "HWC": the feed decoded the mask (mmseg's crop)
        return fn.external_source(source=feed, num_outputs=len(dtypes), batch=True, dtype=dtypes, layout=layouts)
    return fn.readers.webdataset(
        paths=plan.shards, index_paths=[str(p) for p in plan.indexes], ext=names, dtypes=dtypes,
        missing_component_behavior="error", shard_id=plan.rank, num_shards=plan.world_size, pad_last_batch=True,
        name="Reader",
    )


def _reshaped(pixels, size, channels: int | None):
    """A raw member's bytes as H×W×C, by its sample's (rows, columns); `channels` None: as many as the bytes hold
    (a set with grey images stored as one channel)."""
    if channels is None:
        count = pixels.shape(dtype=types.INT32)[0] // (size[0] * size[1])
        shape = fn.stack(size[0], size[1], count)
    else:
        shape = fn.cat(size, types.Constant(np.array([channels], np.int32), device="cpu"))
    return fn.reshape(pixels, shape=shape, layout="HWC")


@pipeline_def
def segmentation_pipeline(plan: LoaderPlan, gpu: bool, stop_after: str | None = None, feed: SampleFeed | None = None):
    """The pipeline DaliLoader runs: the plan's sample job (job.py) executes each sample's parameters, drawn by the
    feed; the graph draws nothing itself. `stop_after` ("read", "decode", "augment", "normalize": before the masks
    are widened to int64) cuts it after that stage, with everything else unchanged (executor, checkpointing), so
    that benchmarks/dali_stages.py times the real thing."""
    ops = Ops(plan, gpu)
    image, mask, *rest = _read(plan, feed)
    if stop_after == "read":
        return image, mask
    if feed is not None and feed.in_feed:  # decoded and made by the job's CPU executor already
        if stop_after in ("decode", "augment"):
            return image, mask
        image, mask = ops.normalize_into(image, mask, plan.config.size)
        extra = rest
    else:
        size = rest.pop(0) if plan.stored.size else None
        meta = [rest.pop(0)] if plan.config.return_keys else []
        outputs = job_for(plan.config).graph(ops, image, mask, size, rest[0] if rest else None, stop_after)
        if stop_after in ("decode", "augment"):
            return outputs[:2]
        image, mask, *extra = outputs
        extra += meta
    if stop_after == "normalize":
        return image, mask
    return image, fn.cast(mask, dtype=types.INT64), *extra  # widened here, by DALI's threads


def build_pipeline(plan: LoaderPlan, *, checkpoint: str | None = None, stop_after: str | None = None,
                   start: int = 0):
    """The built pipeline for a plan: on its device, on the dynamic executor, with checkpointing on; when
    reading through the feed, it starts at batch `start` (counted over the epochs), where `checkpoint` stands."""
    gpu = plan.device.type == "cuda"
    feed = SampleFeed(plan, start) if uses_feed(plan) else None
    with warnings.catch_warnings():  # DALI's note that a callable source's position is ours to restore: it is
        warnings.filterwarnings("ignore", message="Checkpointing enabled in a pipeline with external source")
        pipe = _built(plan, gpu, stop_after, feed, checkpoint)
    note_native_threads()
    return pipe


def _built(plan: LoaderPlan, gpu: bool, stop_after, feed, checkpoint):
    pipe = segmentation_pipeline(
        plan, gpu, stop_after, feed, batch_size=plan.batch_size, num_threads=max(1, plan.config.workers),
        device_id=(plan.device.index or 0) if gpu else None, seed=plan.config.seed * 1009 + plan.rank,
        prefetch_queue_depth=2, exec_dynamic=True, enable_checkpointing=True, checkpoint=checkpoint,
    )
    pipe.build()
    return pipe


class DaliLoader(EpochLoader):
    """Iterates exactly `len(self)` batches per epoch; an epoch left early is finished before the next starts."""

    def __init__(self, plan: LoaderPlan):
        super().__init__(plan)
        self._build(checkpoint=None)

    def _build(self, checkpoint: str | None) -> None:
        self.pipe = build_pipeline(self.plan, checkpoint=checkpoint, start=self.epoch * len(self) + self.position)

    def _epoch(self, epoch: int, start: int):
        for index in range(start, len(self)):
            yield self.to_torch(self._run(), epoch, index)

    def _finish(self, epoch: int, start: int) -> None:
        for _ in range(start, len(self)):
            self._run()

    def _snapshot(self) -> str:
        return self.pipe.checkpoint()

    def _seek(self, state: dict) -> None:
        del self.pipe
        self._build(state["backend"])

    def _run(self):
        """The next outputs. On CUDA they are returned on torch's current stream, so the consumer waits for exactly
        this batch's work and not for what DALI has queued since for the batches it prefetches; `run()` without a
        stream would also block the host until then. (DALI takes the stream positionally only: as a keyword it
        would be read as a pipeline input.)"""
        try:
            if self.plan.device.type == "cuda":
                return self.pipe.run(torch.cuda.current_stream(self.plan.device).cuda_stream)
            return self.pipe.run()
        except RuntimeError as err:  # DALI's long C++ report, turned into what happened and what to do
            raise self._explain(str(err)) from err

    def _explain(self, report: str) -> Exception:
        """A decode failure names the shard and sample; out of memory names the batch size to lower; a failure
        of the reader (storage, a damaged tar) keeps its own message; anything else stays DALI's error."""
        cause = report.partition("encountered:")[2].strip().split("Current pipeline object")[0].strip() or report
        root, plan = self.plan.root, self.plan
        if "out of memory" in report.lower() or "bad_alloc" in report or "MemoryAllocation" in report:
            return FastsegError(f"out of memory while loading batches of {plan.batch_size} at {plan.size[0]}x"
                                f"{plan.size[1]} ({cause[:200]}); lower --batch-size or --image-size")
        if "decoders.image" in report or "reshape" in report:
            bad = SampleTable(plan).find_undecodable(plan.epoch_samples(self.epoch))
            where = (f"{bad[0]}: sample {bad[1]} does not decode ({bad[2]})" if bad else
                     f"a sample of {', '.join(p.rpartition('/')[2] for p in plan.shards)} does not decode "
                     f"({cause[:200]})")
            return FastsegError(f"{where}; check the set with fastseg-shard --verify {root}")
        if "readers.webdataset" in report:
            return FastsegError(f"{root}: reading the shards failed: {cause[:500]}")
        return RuntimeError(report)

    def to_torch(self, outputs, epoch: int, index: int) -> dict:
        """One run's outputs as a batch of the contract (batch `index` of `epoch`, for the padding)."""
        images, masks, *metas = outputs
        sizes = None
        if job_for(self.plan.config).reports_sizes:
            sizes, *metas = metas
            sizes = [tuple(int(v) for v in np.array(sizes[i])) for i in range(len(sizes))]
        with torch.device(self.plan.device):  # zero-copy views that keep DALI's buffers alive
            image = torch.from_dlpack(images.as_tensor())
            mask = torch.from_dlpack(masks.as_tensor())
        if self.plan.config.channels_last:
            image = image.permute(0, 3, 1, 2)  # N×H×W×C from the pipeline: this view is channels-last already
        batch = {"image": image, "mask": self.plan.mark_padding(mask, epoch, index)}
        if sizes is not None:
            batch["sizes"] = sizes
        if self.plan.config.return_keys:
            batch["key"] = [json.loads(np.array(metas[0][i]).tobytes())["key"] for i in range(len(metas[0]))]
        return batch
