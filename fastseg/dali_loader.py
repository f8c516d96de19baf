"""The DALI pipeline (the only module that imports nvidia.dali) and a thin epoch-exact iterator over it.

DALI's webdataset reader never stops at an epoch end: it wraps around and moves each rank to the next slice.
So the iterator counts batches itself (LoaderPlan.batches per epoch) instead of relying on DALI's generic
iterator, whose len() and reset behaviour are easy to get wrong under Lightning (see tests/test_loaders.py).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from .data import LoaderPlan
from .errors import FastsegError
from .format import IMAGE_EXTS, MASK_EXT, META_EXT

try:
    from nvidia.dali import fn, math as dmath, pipeline_def, types
    from nvidia.dali.plugin.pytorch import feed_ndarray
except ImportError as err:  # pragma: no cover - depends on the install
    raise FastsegError("NVIDIA DALI is not installed: pip install nvidia-dali-cuda120 (or -cuda130), "
                       "or use the torch backend (--loader torch)") from err

SHUFFLE_BUFFER = 256


def _augment_window(scale: tuple[float, float], vflip: bool):
    """Per sample, the relative ROI corners [y, x] that both image and mask are resampled from: a random crop
    (area fraction in `scale`, aspect in [3/4, 4/3]) whose start and end swap along an axis to flip it.
    One window for both tensors is what keeps them paired; there is no second flip to get out of step."""
    area = fn.random.uniform(range=list(scale))
    ratio = dmath.exp(fn.random.uniform(range=[float(np.log(3 / 4)), float(np.log(4 / 3))]))
    width = dmath.min(dmath.sqrt(area * ratio), 1.0)
    height = dmath.min(dmath.sqrt(area / ratio), 1.0)
    y0 = fn.random.uniform(range=[0.0, 1.0]) * (1.0 - height)
    x0 = fn.random.uniform(range=[0.0, 1.0]) * (1.0 - width)
    hflip = fn.cast(fn.random.coin_flip(), dtype=types.FLOAT)
    vflip = fn.cast(fn.random.coin_flip(), dtype=types.FLOAT) if vflip else 0.0
    start = fn.stack(y0 + vflip * height, x0 + hflip * width)
    end = fn.stack(y0 + height - vflip * height, x0 + width - hflip * width)
    return start, end


@pipeline_def
def segmentation_pipeline(plan: LoaderPlan, gpu: bool):
    image, mask, meta = fn.readers.webdataset(
        paths=[str(p) for p in plan.shards],
        index_paths=[str(p.with_suffix(".idx")) for p in plan.shards],
        ext=[";".join(IMAGE_EXTS), MASK_EXT, META_EXT],
        missing_component_behavior="error",
        shard_id=plan.rank, num_shards=plan.world_size, pad_last_batch=True,
        random_shuffle=plan.augment, initial_fill=SHUFFLE_BUFFER, name="Reader",
    )
    image = fn.decoders.image(image, device="mixed" if gpu else "cpu", output_type=types.RGB)
    mask = fn.decoders.image(mask, device="cpu", output_type=types.GRAY)
    if gpu:
        mask = mask.gpu()
    mean, std = plan.mean_std
    native = plan.manifest.sizes.get(plan.split) == [[plan.size[1], plan.size[0]]]
    if plan.augment or not native:  # resampling is the costliest step on the CPU: skip it when nothing changes
        resize = dict(size=list(plan.size))
        if plan.augment:
            start, end = _augment_window(plan.scale, plan.vflip)
            resize.update(roi_start=start, roi_end=end, roi_relative=True)
        # straight to float: faster than a uint8 result, and normalize reads it as is
        image = fn.resize(image, interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.FLOAT, **resize)
        mask = fn.resize(mask, interp_type=types.INTERP_NN, **resize)  # nearest only: no new class values
    image = fn.crop_mirror_normalize(image, mean=mean, std=std, dtype=types.FLOAT, output_layout="CHW")
    return image, mask, meta


class DaliLoader:
    """Iterates exactly `len(self)` batches per epoch; an epoch left early is finished before the next starts."""

    def __init__(self, plan: LoaderPlan):
        self.plan = plan
        gpu = plan.device.type == "cuda"
        self.pipe = segmentation_pipeline(
            plan, gpu, batch_size=plan.batch_size, num_threads=plan.workers,
            device_id=(plan.device.index or 0) if gpu else None, seed=plan.seed * 1009 + plan.rank,
            prefetch_queue_depth=2,
        )
        self.pipe.build()
        self.epoch = 0
        self._left = 0  # batches of the current epoch not yet taken from the pipeline

    def __len__(self) -> int:
        return self.plan.batches

    def __iter__(self):
        while self._left:  # the previous epoch was abandoned: keep the reader in step with our epoch count
            self._run()
        epoch, self.epoch = self.epoch, self.epoch + 1
        self._left = len(self)
        for index in range(len(self)):
            yield self._to_torch(self._run(), epoch, index)

    def _run(self):
        self._left -= 1
        try:
            return self.pipe.run()
        except RuntimeError as err:  # DALI reports a bad sample with a long C++ trace; say what to do instead
            detail = str(err).strip().splitlines()[0][:300]
            shards = ", ".join(p.name for p in self.plan.shards)
            raise FastsegError(f"{self.plan.root}: DALI could not read a sample of {shards} ({detail}); "
                               f"check the set with fastseg-shard --verify {self.plan.root}") from err

    def _to_torch(self, outputs, epoch: int, index: int) -> dict:
        images, masks, metas = outputs
        device = self.plan.device
        image = torch.empty(images.as_tensor().shape(), dtype=torch.float32, device=device)
        mask = torch.empty(masks.as_tensor().shape(), dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        feed_ndarray(images.as_tensor(), image, cuda_stream=stream)
        feed_ndarray(masks.as_tensor(), mask, cuda_stream=stream)
        batch = {"image": image, "mask": self.plan.mark_padding(mask[..., 0].long(), epoch, index)}
        if self.plan.return_keys:
            batch["key"] = [json.loads(np.array(metas[i]).tobytes())["key"] for i in range(len(metas))]
        return batch
