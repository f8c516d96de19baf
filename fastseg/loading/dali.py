"""The DALI pipeline (the only module that imports nvidia.dali) and a thin epoch-exact iterator over it.

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
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch

from ..errors import FastsegError
from ..format import IGNORE_INDEX, META_EXT, RAW_SIZE_DTYPE, RAW_SIZE_EXT
from ..processes import note_native_threads
from . import recipe
from .contract import EpochLoader, LoaderPlan
from .members import SampleTable
from .torch_backend import member_pixels

# What fastseg calls needs this DALI: the dynamic executor handing out zero-copy outputs that stay valid while
# held, pipeline checkpoints of the webdataset reader, its s3:// paths and run(stream). Tested with 2.4.
DALI_FLOOR = (2, 4)
try:
    import nvidia.dali
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath
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

__all__ = ["DALI_FLOOR", "DaliLoader", "build_pipeline", "check_dali_version", "find_undecodable",
           "segmentation_pipeline"]


def _crop_window(scale: tuple[float, float], hflip, vflip):
    """Per sample, the relative ROI corners [y, x] that both image and mask are resampled from: a random crop
    (area fraction in `scale`, aspect in [3/4, 4/3]) whose start and end swap along an axis to flip it.
    One window for both tensors is what keeps them paired; there is no second flip to get out of step."""
    area = fn.random.uniform(range=list(scale))
    ratio = dmath.exp(fn.random.uniform(range=[float(np.log(3 / 4)), float(np.log(4 / 3))]))
    width = dmath.min(dmath.sqrt(area * ratio), 1.0)
    height = dmath.min(dmath.sqrt(area / ratio), 1.0)
    y0 = fn.random.uniform(range=[0.0, 1.0]) * (1.0 - height)
    x0 = fn.random.uniform(range=[0.0, 1.0]) * (1.0 - width)
    hflip = fn.cast(hflip, dtype=types.FLOAT)
    vflip = fn.cast(vflip, dtype=types.FLOAT) if vflip is not None else 0.0
    start = fn.stack(y0 + vflip * height, x0 + hflip * width)
    end = fn.stack(y0 + height - vflip * height, x0 + width - hflip * width)
    return dict(roi_start=start, roi_end=end, roi_relative=True)


def _resize(image, mask, size, window=None):
    """The one resampling rule of both backends (and of fastseg-predict): bilinear at pixel centres, antialiased
    when shrinking, which is what Pillow's BILINEAR does in the torch loader. DALI's antialias=False would be 19%
    faster on the CPU crop path (benchmarks/results/resample_davis_crop_cpu_*), but a model trained through one
    backend and scored through the other then sees other pixels (0.035 mean difference, normalized, against 0.005:
    benchmarks/results/resample_check_davis*_cpu)."""
    # straight to float: faster than a uint8 result, and normalize reads it as is
    image = fn.resize(image, size=list(size), interp_type=types.INTERP_LINEAR, antialias=True, dtype=types.FLOAT,
                      **(window or {}))
    mask = fn.resize(mask, size=list(size), interp_type=types.INTERP_NN, **(window or {}))  # no new class values
    return image, mask


def _draw(low: float, high: float, identity: float, values=None):
    """A value drawn per sample (uniform in [low, high], or from `values`) where its coin (p = 0.5) says so, else
    `identity`: a colour step that may not happen."""
    coin = fn.cast(fn.random.coin_flip(), dtype=types.FLOAT)
    value = fn.random.uniform(values=values) if values else fn.random.uniform(range=[low, high])
    return identity + coin * (value - identity)


def _draws(config):
    """One sample's draws as recipe.sample_draws lays them out, made by DALI's random operators (so a pipeline
    checkpoint holds them)."""
    low, high = config.ratio_range
    ratio = fn.random.uniform(range=[low, high]) if low < high else types.Constant(low, device="cpu")
    coin = [fn.cast(fn.random.coin_flip(), dtype=types.FLOAT) for _ in range(2)]
    scalars = fn.stack(ratio, coin[0], coin[1] if config.vflip else coin[1] * 0.0,
                       _draw(-recipe.BRIGHTNESS, recipe.BRIGHTNESS, 0.0), _draw(*recipe.CONTRAST, 1.0),
                       _draw(*recipe.SATURATION, 1.0),
                       _draw(0, 0, 0.0, values=[2.0 * v for v in range(-recipe.HUE, recipe.HUE + 1)]))
    return fn.cat(scalars, fn.random.uniform(range=[0.0, 1.0], shape=[2 * recipe.DRAWS]))


class _RecipeStep:
    """recipe.transform over a batch, for fn.python_function on the CPU: OpenCV releases the GIL, so the samples
    run on `threads` threads at once."""

    def __init__(self, config, threads: int):
        self.config, self.pool = config, ThreadPoolExecutor(max(1, threads))

    def one(self, image, mask, draws):
        c = self.config
        return recipe.transform(image, mask[..., 0], draws, c.base_size, c.size, c.cat_max_ratio, c.photometric)

    def __call__(self, images, masks, draws):
        done = list(self.pool.map(self.one, images, masks, draws))
        return [image for image, _ in done], [mask[..., None] for _, mask in done]


def _geometry(mask: np.ndarray, draws: np.ndarray, base, crop, cat_max_ratio):
    """recipe.crop_geometry and the colour transform, for the GPU path: the mask's crop, the image's window, [M|t]."""
    labels, window = recipe.crop_geometry(mask[..., 0], draws, base, crop, cat_max_ratio)
    return labels[..., None], np.array(window, np.float32), recipe.colour_transform(draws[recipe.COLOUR])


def _recipe(plan: LoaderPlan, image, mask):
    """augment="mmseg" (recipe.py), by MMSegmentation's rule (cat_max_ratio tested on the resized mask) from draws
    made by DALI's random operators. On the CPU, recipe.transform itself runs inside the graph (OpenCV: DALI's CPU
    resize and hsv take 4 and 7 ms a 512×512 crop, OpenCV 0.5 and 0.2); on a GPU a small Python step finds the
    mask's crop, the image's window and the colour transform, and DALI's GPU resize and coord_transform apply them."""
    config = plan.config
    draws = _draws(config)
    if plan.device.type != "cuda":
        return fn.python_function(image, mask, draws, function=_RecipeStep(config, config.workers),
                                  batch_processing=True, num_outputs=2, output_layouts=["HWC", "HWC"])
    mask, window, affine = fn.python_function(
        mask, draws, num_outputs=3, output_layouts=["HWC", "", ""],
        function=partial(_geometry, base=config.base_size, crop=config.size, cat_max_ratio=config.cat_max_ratio))
    size = fn.cast(mask.shape()[0:2], dtype=types.FLOAT)
    image = fn.resize(image, size=size, roi_start=window[0:2], roi_end=window[2:4], roi_relative=False,
                      interp_type=types.INTERP_LINEAR, antialias=False)
    if config.photometric:
        image = fn.coord_transform(image, M=affine[:, 0:3], T=affine[:, 3], dtype=types.UINT8)
    return image, mask


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


def _for_scoring(plan: LoaderPlan, image, mask):
    """Scoring at the labels' resolution: the image resized to `size` (or to fit it with the aspect kept, the
    size computed from the decoded mask's shape as keep_ratio_size does), normalized, padded with 0 to the batch's
    largest; the mask as decoded, padded with ignore; and per sample (image rows, columns, label rows, columns)."""
    shape = mask.shape()  # on the CPU, where the mask is decoded: the image has the same size (shard contract)
    rows, cols = fn.cast(shape[0], dtype=types.FLOAT), fn.cast(shape[1], dtype=types.FLOAT)
    if plan.config.keep_ratio:
        scale = plan.config.size
        factor = dmath.min(max(scale) / dmath.max(rows, cols), min(scale) / dmath.min(rows, cols))
        height, width = dmath.floor(rows * factor + 0.5), dmath.floor(cols * factor + 0.5)
        image = fn.resize(image, size=fn.stack(height, width), interp_type=types.INTERP_LINEAR, antialias=True,
                          dtype=types.FLOAT)
    else:
        height, width = (types.Constant(float(side), device="cpu") for side in plan.config.size)
        if not plan.native:
            image = fn.resize(image, size=list(plan.config.size), interp_type=types.INTERP_LINEAR, antialias=True,
                              dtype=types.FLOAT)
    sizes = fn.cast(fn.stack(height, width, rows, cols), dtype=types.INT64)
    mean, std = plan.mean_std
    image = fn.crop_mirror_normalize(image, mean=mean, std=std, dtype=types.FLOAT,
                                     output_layout="HWC" if plan.config.channels_last else "CHW")
    image = fn.pad(image, fill_value=0.0, axis_names="HW")
    mask = fn.pad(fn.cast(fn.squeeze(mask, axis_names="C"), dtype=types.INT64), fill_value=IGNORE_INDEX,
                  axis_names="HW")
    return image, (mask.gpu() if plan.device.type == "cuda" else mask), sizes


class ShuffledFeed(SampleTable):
    """The encoded members of each batch in the order the contract gives (LoaderPlan.epoch_samples: a new
    permutation of the whole split every epoch), for fn.external_source: DALI's webdataset reader can only shuffle
    inside a buffer over the order the shards were written in. Called once per batch, in order, from batch `start`
    (counted over the epochs) on; a restored pipeline gets a feed that starts where its checkpoint stands. Reads from
    a bucket go out in parallel."""

    def __init__(self, plan: LoaderPlan, start: int = 0):
        super().__init__(plan)
        self._names = member_names(plan)
        self.batch = start
        self._epoch = self._padded = None
        remote = bool(self.aws)
        self._pool = ThreadPoolExecutor(16) if remote else None

    def _members(self, index: int) -> list[np.ndarray]:
        path, _, members = self.members[index]
        names = list(self._names)
        names[0] = self.plan.stored.image_in(members)  # the one of the image's alternatives this sample holds
        return [np.frombuffer(self.read(path, members[name]), RAW_SIZE_DTYPE if name == RAW_SIZE_EXT else np.uint8)
                for name in names]

    def __call__(self):
        epoch, position = divmod(self.batch, self.plan.batches)
        self.batch += 1
        size = self.plan.batch_size
        if epoch != self._epoch:  # padded to whole batches by repeating the last sample, as the torch loader does
            samples = self.plan.epoch_samples(epoch)
            self._epoch, self._padded = epoch, samples + samples[-1:] * (self.plan.batches * size - len(samples))
        chosen = self._padded[position * size:(position + 1) * size]
        rows = list(self._pool.map(self._members, chosen)) if self._pool else [self._members(i) for i in chosen]
        return tuple(list(column) for column in zip(*rows))


def member_names(plan: LoaderPlan) -> list[str]:
    """The members the pipeline reads, in order: image (its alternatives joined by ';', as DALI's reader takes
    them), mask, the size where the set stores pixels, and with keys the meta."""
    stored = plan.stored
    names = [";".join(stored.images), stored.mask] + ([stored.size] if stored.size else [])
    return names + ([META_EXT] if plan.config.return_keys else [])


def _read(plan: LoaderPlan, feed: ShuffledFeed | None):
    """The stored members of each sample (member_names): from the shuffled feed when training, else from DALI's
    webdataset reader in manifest order (which streams s3:// shards itself). A raw set's size member is int32."""
    names = member_names(plan)
    dtypes = [types.INT32 if name == RAW_SIZE_EXT else types.UINT8 for name in names]
    if feed is not None:
        return fn.external_source(source=feed, num_outputs=len(names), batch=True, dtype=dtypes)
    return fn.readers.webdataset(
        paths=plan.shards, index_paths=[str(p) for p in plan.indexes], ext=names, dtypes=dtypes,
        missing_component_behavior="error", shard_id=plan.rank, num_shards=plan.world_size, pad_last_batch=True,
        name="Reader",
    )


def _decode(plan: LoaderPlan, gpu: bool, image, mask, size=None):
    """Images (RGB, on the GPU with `mixed` decoding there) and masks (one channel, on the CPU), both H×W×C. Raw
    members are only reshaped by their sample's size member: no decode, and on a GPU a raw image goes there as
    it is."""
    stored = plan.stored
    if stored.raw_image:
        image = _reshaped(image, size, 3)
        image = image.gpu() if gpu else image
    else:
        image = fn.decoders.image(image, device="mixed" if gpu else "cpu", output_type=types.RGB)
    mask = _reshaped(mask, size, 1) if stored.raw_mask else fn.decoders.image(mask, device="cpu", output_type=types.GRAY)
    return image, mask


def _reshaped(pixels, size, channels: int):
    """A raw member's bytes as H×W×C, by its sample's (rows, columns)."""
    shape = fn.cat(size, types.Constant(np.array([channels], np.int32), device="cpu"))
    return fn.reshape(pixels, shape=shape, layout="HWC")


@pipeline_def
def segmentation_pipeline(plan: LoaderPlan, gpu: bool, stop_after: str | None = None,
                          feed: ShuffledFeed | None = None):
    """The pipeline DaliLoader runs. `stop_after` ("read", "decode", "augment", "normalize": before the masks are
    widened to int64) cuts it after that stage, with everything else unchanged (executor, checkpointing), so that
    benchmarks/dali_stages.py times the real thing."""
    image, mask, *rest = _read(plan, feed)
    if stop_after == "read":
        return image, mask
    size, meta = (rest[0], rest[1:]) if plan.stored.size else (None, rest)
    image, mask = _decode(plan, gpu, image, mask, size)
    if stop_after == "decode":
        return image, mask.gpu() if gpu else mask
    if plan.config.original_labels:
        return (*_for_scoring(plan, image, mask), *meta)
    if plan.config.augment == "mmseg":
        image, mask = _recipe(plan, image, mask)
        mask = mask.gpu() if gpu else mask
        if stop_after == "augment":
            return image, mask
        image, mask = _normalize_into(plan, image, mask, plan.config.size)
        return (image, mask) if stop_after == "normalize" else (image, fn.cast(mask, dtype=types.INT64), *meta)
    if gpu:
        mask = mask.gpu()
    # one coin per sample (and axis) drives image and mask alike
    hflip = fn.random.coin_flip() if plan.config.augment != "none" else None
    vflip = fn.random.coin_flip() if plan.config.augment != "none" and plan.config.vflip else None
    mirror = 0
    if plan.config.augment == "crop":
        image, mask = _resize(image, mask, plan.size, _crop_window(plan.config.scale, hflip, vflip))
    else:
        if not plan.native:  # resampling is the costliest CPU step: only when the output size asks for it
            image, mask = _resize(image, mask, plan.size)
        if hflip is not None:  # the image is mirrored inside crop_mirror_normalize, for free
            mirror = hflip
            mask = fn.flip(mask, horizontal=hflip, vertical=vflip if vflip is not None else 0)
        if vflip is not None:
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


def find_undecodable(plan: LoaderPlan, samples: list[int]) -> tuple[str, str, str] | None:
    """(shard, key, error) of the first of `samples` (split numbers) whose image or mask does not decode (or, raw,
    does not fit its size), read member by member as the torch loader reads them: DALI's decoder does not say which
    sample failed."""
    table, stored = SampleTable(plan), plan.stored
    for number in samples:
        shard, key, members = table.members[number]
        for ext, channels, raw in ((stored.image_in(members), 3, stored.raw_image), (stored.mask, 1, stored.raw_mask)):
            if ext not in members:
                continue
            try:
                size = table.read(shard, members[stored.size]) if raw else None
                member_pixels(table.read(shard, members[ext]), size, channels)
            except Exception as err:  # Pillow raises several types for corrupt data
                return shard, key, f"{key}.{ext}: {str(err).split(' <')[0]}"
    return None


def build_pipeline(plan: LoaderPlan, *, checkpoint: str | None = None, stop_after: str | None = None,
                   start: int = 0):
    """The built pipeline for a plan: on its device, on the dynamic executor, with checkpointing on; when
    shuffling, its feed starts at batch `start` (counted over the epochs), where `checkpoint` stands."""
    gpu = plan.device.type == "cuda"
    feed = ShuffledFeed(plan, start) if plan.config.shuffle else None
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
            bad = find_undecodable(plan, plan.epoch_samples(self.epoch))
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
