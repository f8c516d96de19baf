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
from . import feed as feeding
from .contract import EpochLoader, LoaderPlan
from .feed import PARAMETERS, SampleFeed, member_names
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


def _resize(image, mask, size, image_window: dict | None = None, mask_window: dict | None = None):
    """The one resampling rule of both backends (and of fastseg-predict): bilinear at pixel centres, antialiased
    when shrinking, which is what Pillow's BILINEAR does in the torch loader; each from its window (a resize ROI)
    where one is given. DALI's antialias=False is faster on the CPU crop path, but a model trained through one
    backend and scored through the other would then see other pixels (benchmarks/resample_check.py measures the
    difference)."""
    # straight to float: faster than a uint8 result, and normalize reads it as is
    image = fn.resize(image, size=list(size), interp_type=types.INTERP_LINEAR, antialias=True, dtype=types.FLOAT,
                      **(image_window or {}))
    mask = fn.resize(mask, size=list(size), interp_type=types.INTERP_NN, **(mask_window or {}))  # no new classes
    return image, mask


def _window_decoded(plan: LoaderPlan, gpu: bool, image, size, parameters):
    """The region of each image that the feed chose (parameters[0:4]: top, left, bottom, right; windows.py), decoded
    alone: region decoding on `mixed` (nvJPEG) or `cpu` (libjpeg-turbo), with the CPU's chroma upsampling on the
    GPU too. A raw image (its region is the whole image) is only reshaped."""
    if plan.stored.raw_image:
        return _decode(plan, gpu, image, None, size)[0]
    return fn.decoders.image_slice(image, start=fn.cast(parameters[0:2], dtype=types.INT32),
                                   end=fn.cast(parameters[2:4], dtype=types.INT32), axis_names="HW",
                                   device="mixed" if gpu else "cpu", output_type=types.RGB, jpeg_fancy_upsampling=True)


def _crop_on_device(plan: LoaderPlan, gpu: bool, image, mask, size, parameters):
    """augment="crop" on a GPU: the image's region decoded there and resampled from the window inside it
    (parameters[4:8], the edges swapped along a flipped axis, so resampling flips), the mask through the same
    window of the whole mask (parameters[8:12], relative)."""
    image = _window_decoded(plan, gpu, image, size, parameters)
    mask = _decode(plan, gpu, None, mask, size)[1]
    mask = mask.gpu() if gpu else mask
    return _resize(image, mask, plan.size, dict(roi_start=parameters[4:6], roi_end=parameters[6:8], roi_relative=False),
                   dict(roi_start=parameters[8:10], roi_end=parameters[10:12], roi_relative=True))


def _recipe_on_device(plan: LoaderPlan, gpu: bool, image, mask, size, parameters):
    """augment="mmseg" on a GPU (recipe.py): the feed has chosen the crop from the mask (the mask's crop arrives
    decoded) and the image's window; the image's region is decoded there, resampled from the window (parameters
    [4:8]) bilinearly without antialiasing (MMSegmentation's rule) and coloured by the [M | t] of parameters[8:20]."""
    image = _window_decoded(plan, gpu, image, size, parameters)
    image = fn.resize(image, size=fn.cast(mask.shape()[0:2], dtype=types.FLOAT), roi_start=parameters[4:6],
                      roi_end=parameters[6:8], roi_relative=False, interp_type=types.INTERP_LINEAR, antialias=False)
    if plan.config.photometric:
        affine = fn.reshape(parameters[8:20], shape=[3, 4])
        image = fn.coord_transform(image, M=affine[:, 0:3], T=affine[:, 3], dtype=types.UINT8)
    return image, mask.gpu() if gpu else mask


def _normalize_into(plan: LoaderPlan, image, mask, size):
    """Normalized images and (uint8, H×W) masks of exactly `size`, padded at the bottom and right where smaller:
    the image with 0 after normalization, the mask with ignore."""
    mean, std = plan.mean_std
    image = fn.crop_mirror_normalize(image, crop=list(size), crop_pos_x=0.0, crop_pos_y=0.0,
                                     out_of_bounds_policy="pad", fill_values=0.0, mean=mean, std=std,
                                     dtype=types.FLOAT, output_layout="HWC" if plan.config.channels_last else "CHW")
    mask = fn.crop(mask, crop=list(size), crop_pos_x=0.0, crop_pos_y=0.0, out_of_bounds_policy="pad",
                   fill_values=IGNORE_INDEX)
    return image, fn.squeeze(mask, axis_names="C")


def _for_scoring(plan: LoaderPlan, image, mask, sizes):
    """Scoring at the labels' resolution: the image resized to its scoring size (the feed's `sizes`: image rows,
    columns, label rows, columns per sample, LoaderConfig.scoring_size), normalized, padded with 0 to the batch's
    largest; the mask as decoded, padded with ignore; and the sizes."""
    if plan.config.keep_ratio or not plan.native:
        image = fn.resize(image, size=fn.cast(sizes[0:2], dtype=types.FLOAT), interp_type=types.INTERP_LINEAR,
                          antialias=True, dtype=types.FLOAT)
    mean, std = plan.mean_std
    image = fn.crop_mirror_normalize(image, mean=mean, std=std, dtype=types.FLOAT,
                                     output_layout="HWC" if plan.config.channels_last else "CHW")
    image = fn.pad(image, fill_value=0.0, axis_names="HW")
    mask = fn.pad(fn.cast(fn.squeeze(mask, axis_names="C"), dtype=types.INT64), fill_value=IGNORE_INDEX,
                  axis_names="HW")
    return image, (mask.gpu() if plan.device.type == "cuda" else mask), sizes


# the DALI type of each kind of per-sample parameters the feed hands the graph (feed.PARAMETERS)
DALI_TYPES = {np.dtype(np.int32): types.INT32, np.dtype(np.float32): types.FLOAT, np.dtype(np.int64): types.INT64}


def _read(plan: LoaderPlan, feed: SampleFeed | None):
    """The stored members of each sample (member_names), and where the feed has them its parameters: from the feed
    when it is used (uses_feed), else from DALI's webdataset reader in manifest order (a set on disk). A raw set's
    size member is int32."""
    names = member_names(plan)
    dtypes = [types.INT32 if name == RAW_SIZE_EXT else types.UINT8 for name in names]
    if feed is not None and feeding.executed_in_feed(plan):  # the recipe's crops, HWC, and with keys the meta
        count = 3 if plan.config.return_keys else 2
        return fn.external_source(source=feed, num_outputs=count, batch=True, dtype=[types.UINT8] * count,
                                  layout=["HWC", "HWC", ""][:count])
    if feed is not None:
        dtypes += [DALI_TYPES[PARAMETERS[plan.config.mode]]] if plan.config.mode in PARAMETERS else []
        layouts = [""] * len(dtypes)
        if plan.config.mode == "mmseg":  # the mask's crop, chosen and cut by the feed (SampleFeed._window_row)
            layouts[1] = "HWC"
        return fn.external_source(source=feed, num_outputs=len(dtypes), batch=True, dtype=dtypes, layout=layouts)
    return fn.readers.webdataset(
        paths=plan.shards, index_paths=[str(p) for p in plan.indexes], ext=names, dtypes=dtypes,
        missing_component_behavior="error", shard_id=plan.rank, num_shards=plan.world_size, pad_last_batch=True,
        name="Reader",
    )


def _decode(plan: LoaderPlan, gpu: bool, image, mask, size=None):
    """Images (RGB, on the GPU with `mixed` decoding there) and masks (one channel, on the CPU), both H×W×C. Raw
    members are only reshaped by their sample's size member: no decode, and on a GPU a raw image goes there as
    it is. Either may be None: not asked for."""
    stored = plan.stored
    if image is not None and stored.raw_image:
        image = _reshaped(image, size, None if stored.grey else 3)
        if stored.grey:  # a grey image's one channel broadcast to three (an RGB image's three are kept)
            image = image * types.Constant(np.ones(3, np.uint8), device="cpu")
        image = image.gpu() if gpu else image
    elif image is not None:
        image = fn.decoders.image(image, device="mixed" if gpu else "cpu", output_type=types.RGB)
    if mask is not None:
        mask = (_reshaped(mask, size, 1) if stored.raw_mask else
                fn.decoders.image(mask, device="cpu", output_type=types.GRAY))
    return image, mask


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
    """The pipeline DaliLoader runs: it executes each sample's parameters (SampleFeed.parameters) and draws nothing
    itself. `stop_after` ("read", "decode", "augment", "normalize": before the masks are widened to int64) cuts it
    after that stage, with everything else unchanged (executor, checkpointing), so that benchmarks/dali_stages.py
    times the real thing."""
    image, mask, *rest = _read(plan, feed)
    if stop_after == "read":
        return image, mask
    if feed is not None and feeding.executed_in_feed(plan):  # decoded and cropped by the feed already
        if stop_after in ("decode", "augment"):
            return image, mask
        image, mask = _normalize_into(plan, image, mask, plan.config.size)
        return (image, mask) if stop_after == "normalize" else (image, fn.cast(mask, dtype=types.INT64), *rest)
    size = rest.pop(0) if plan.stored.size else None
    meta = [rest.pop(0)] if plan.config.return_keys else []
    parameters = rest[0] if rest else None
    mode = plan.config.mode
    if mode in ("crop", "mmseg"):  # each image decoded in the region its crop keeps (the feed chose it)
        steps = _crop_on_device if mode == "crop" else _recipe_on_device
        image, mask = steps(plan, gpu, image, mask, size, parameters)
        if stop_after in ("decode", "augment"):
            return image, mask
        image, mask = _normalize_into(plan, image, mask, plan.config.size)
        return (image, mask) if stop_after == "normalize" else (image, fn.cast(mask, dtype=types.INT64), *meta)
    image, mask = _decode(plan, gpu, image, mask, size)
    if stop_after == "decode":
        return image, mask.gpu() if gpu else mask
    if mode == "scoring":
        return (*_for_scoring(plan, image, mask, parameters), *meta)
    if gpu:
        mask = mask.gpu()
    mirror = 0
    if not plan.native:  # resampling is the costliest CPU step: only when the output size asks for it
        image, mask = _resize(image, mask, plan.size)
    if mode == "flip":  # the image is mirrored inside crop_mirror_normalize, for free
        mirror, vflip = parameters[0], parameters[1] if plan.config.vflip else 0
        mask = fn.flip(mask, horizontal=mirror, vertical=vflip)
        if plan.config.vflip:
            image = fn.flip(image, horizontal=0, vertical=vflip)
    if stop_after == "augment":
        return image, mask
    mean, std = plan.mean_std
    image = fn.crop_mirror_normalize(image, mirror=mirror, mean=mean, std=std, dtype=types.FLOAT,
                                     output_layout="HWC" if plan.config.channels_last else "CHW")
    mask = fn.squeeze(mask, axis_names="C")
    if stop_after == "normalize":
        return image, mask
    return image, fn.cast(mask, dtype=types.INT64), *meta  # widened here, by DALI's threads


def build_pipeline(plan: LoaderPlan, *, checkpoint: str | None = None, stop_after: str | None = None,
                   start: int = 0):
    """The built pipeline for a plan: on its device, on the dynamic executor, with checkpointing on; when
    reading through the feed, it starts at batch `start` (counted over the epochs), where `checkpoint` stands."""
    gpu = plan.device.type == "cuda"
    feed = SampleFeed(plan, start) if feeding.uses_feed(plan) else None
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
        if self.plan.config.original_labels:
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
