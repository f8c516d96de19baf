"""fastseg-train measures itself: per epoch, images/s, step time and the data stall (the share of the training
time spent waiting for the next batch), plus the model's FLOPs per image and the MFU where the device's peak is
known; at the end, one line says whether the run was input-bound and what to try.

The wait for data is timed where Lightning itself marks it: its training loop wraps every fetch of a batch in the
profiler action `[_TrainingEpochLoop].train_dataloader_next`, so a profiler that keeps only that action measures
the stall with nothing added to the step. Lightning's ThroughputMonitor is not used: it synchronizes the GPU after
every step (a host-device sync the fast path avoids) and knows nothing of the stall. Its FLOP counter and peak
table are used.
"""
from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import get_available_flops, measure_flops
from pytorch_lightning.profilers import Profiler

from .model import PRECISION_DTYPES, UNet

FETCH = "[_TrainingEpochLoop].train_dataloader_next"
STALL_BOUND = 0.10  # a run whose steps wait this long for data is input-bound

# Dense (not sparse) peaks of the boards whose names Lightning's table misreads: it lists the H200s by their
# sparse figures and matches "h200" inside "h200 nvl" as well. Keyed by the exact name torch reports; from NVIDIA's
# H200 datasheet (tensor-core figures halved: the datasheet quotes them with sparsity).
TF32 = "tfloat32"  # Lightning's key for the TF32 tensor-core peak
DENSE_PEAKS = {
    "nvidia h200": {torch.float16: 989.4e12, torch.bfloat16: 989.4e12, TF32: 494.7e12, torch.float32: 66.9e12},
    "nvidia h200 nvl": {torch.float16: 835.5e12, torch.bfloat16: 835.5e12, TF32: 417.5e12, torch.float32: 60.3e12},
}


class FetchTimer(Profiler):
    """Keeps the total seconds Lightning spends fetching training batches; every other action is ignored."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0
        self._started = None

    def start(self, action_name: str) -> None:
        if action_name == FETCH:
            self._started = time.perf_counter()

    def stop(self, action_name: str) -> None:
        if action_name == FETCH and self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def summary(self) -> str:
        return ""


def flops_per_image(out_channels: int, width: int, size: tuple[int, int], build=None) -> int | None:
    """Forward + backward FLOPs of one image through the UNet (or the network `build()` returns), counted on the
    meta device (no memory, no time). None where a network cannot be built there (one that loads weights, say):
    the run then reports no MFU."""
    try:
        with torch.device("meta"):
            model = build() if build is not None else UNet(out_channels, width=width)
            image = torch.empty(1, 3, *size)
        return measure_flops(model, lambda: model(image), lambda out: out.sum())
    except Exception:  # whatever a user's network does on the meta device; the FLOPs are a nice-to-have
        if build is None:
            raise
        return None


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for the run's compute dtype, or None where it is not known (the CPU).

    With 32-true, the convolutions run on TF32 tensor cores whenever cudnn may use them (PyTorch's default), so the
    TF32 peak is the honest one; the plain FP32 figure would put the MFU past 100%."""
    dtype = PRECISION_DTYPES.get(precision)
    if device.type != "cuda" or dtype is None:
        return None
    if dtype is torch.float32 and torch.backends.cudnn.allow_tf32:
        dtype = TF32
    name = torch.cuda.get_device_name(device).strip().lower()
    if name in DENSE_PEAKS:
        return DENSE_PEAKS[name].get(dtype)
    return get_available_flops(device, dtype)


def mfu(flops: int | None, images_per_s: float, peak: float | None, devices: int) -> float | None:
    """Model FLOPs utilisation: the FLOPs done per second over the peak of all the devices that did them."""
    return flops * images_per_s / (peak * devices) if flops and peak else None


class ThroughputMeter(pl.Callback):
    """Per training epoch: images (all ranks), seconds, images/s, step time, data stall; logged and kept."""

    def __init__(self, timer: FetchTimer, flops: int | None = None, peak: float | None = None):
        self.timer, self.flops, self.peak = timer, flops, peak
        self.epochs: list[dict] = []
        self.devices = 1
        self._start = None

    def on_train_epoch_start(self, trainer, module):
        self._begin()

    def _begin(self):
        self._images, self._steps = 0, 0
        self._fetch_start = self.timer.seconds
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_index):
        if self._start is None:  # a run resumed mid-epoch skips on_train_epoch_start
            self._begin()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        self._images += batch["real"]  # padding is not an image trained on; a host int: no device sync
        self._steps += 1
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and module.device.type == "cuda":
            torch.cuda.synchronize(module.device)  # once an epoch, so its last steps count in its time
        self._end = time.perf_counter()  # validation, which Lightning runs before on_train_epoch_end, is left out

    def on_train_epoch_end(self, trainer, module):
        seconds, self._start = self._end - self._start, None
        stall = (self.timer.seconds - self._fetch_start) / seconds if seconds else 0.0
        figures = torch.tensor([self._images, seconds, stall], dtype=torch.float64, device=module.device)
        if trainer.world_size > 1:  # images summed over ranks; time and stall from the slowest rank
            total = trainer.strategy.reduce(figures[:1].clone(), reduce_op="sum")
            slowest = trainer.strategy.reduce(figures[1:].clone(), reduce_op="max")
            figures = torch.cat([total, slowest])
        images, seconds, stall = figures.tolist()
        self.devices = trainer.world_size
        # the stall is not clamped: a figure outside [0, 1] means the timing is wrong, and the tests would see it
        epoch = {"epoch": trainer.current_epoch, "images": int(images), "steps": self._steps,
                 "seconds": round(seconds, 4), "images_per_s": round(images / seconds, 2),
                 "step_ms": round(1000 * seconds / max(self._steps, 1), 1), "data_stall": round(stall, 4)}
        if self.flops and self.peak:
            epoch["mfu"] = mfu(self.flops, images / seconds, self.peak, self.devices)  # full precision: tiny runs
        self.epochs.append(epoch)
        # the figures are reduced over the ranks already (and so the same on all of them): the sync is a no-op,
        # and saying so keeps Lightning from advising it every epoch
        for key in ("images_per_s", "step_ms", "data_stall", "mfu"):
            if key in epoch:
                module.log(f"perf/{key}", float(epoch[key]), on_step=False, on_epoch=True, sync_dist=True,
                           reduce_fx="max")

    def report(self, loader: str, workers: int, accelerator: str, augment: str = "flip") -> dict:
        """The figures for metrics.json, over the epochs after the first (warm-up: cudnn autotuning, compile,
        first reads) where there are more than one, and the verdict."""
        steady = self.epochs[1:] or self.epochs
        images = sum(e["images"] for e in steady)
        seconds = sum(e["seconds"] for e in steady)
        stall = sum(e["data_stall"] * e["seconds"] for e in steady) / seconds if seconds else 0.0
        summary = {"images_per_s": round(images / seconds, 2) if seconds else None,
                   "step_ms": round(sum(e["step_ms"] for e in steady) / len(steady), 1) if steady else None,
                   "data_stall": round(stall, 4), "epochs_measured": [e["epoch"] for e in steady],
                   "flops_per_image": self.flops, "peak_flops": self.peak,
                   "mfu": mfu(self.flops, images / seconds, self.peak, self.devices) if seconds else None,
                   "devices": self.devices, "per_epoch": self.epochs}
        summary["verdict"] = verdict(summary, loader, workers, accelerator, augment)
        return summary


def verdict(summary: dict, loader: str, workers: int, accelerator: str, augment: str = "flip") -> str:
    rate = f"{summary['images_per_s']:.1f} images/s, {summary['step_ms']:.0f} ms a step"
    waiting = f"{summary['data_stall']:.1%} of the time waiting for data"
    if summary["data_stall"] >= STALL_BOUND:
        tips = []
        if loader != "dali":
            tips.append("--loader dali")
        tips.append(f"more --workers (now {workers})")
        if accelerator == "gpu":
            tips.append("GPU decoding (--loader dali decodes on the GPU)" if loader != "dali" else
                        "a smaller --image-size or JPEG images (nvJPEG decodes them on the GPU)")
        elif augment == "crop":
            tips.append("--augment flip (no resampling at the native size)")
        return f"input-bound: {rate}, {waiting}; try {', '.join(tips)}"
    utilisation = f", MFU {summary['mfu']:.1%}" if summary.get("mfu") else ""
    tip = ("--compile, a larger --batch-size, --precision bf16-mixed" if accelerator == "gpu" else
           "a GPU, or a smaller --width/--image-size")
    return f"compute-bound: {rate}, {waiting}{utilisation}; the input keeps up; to go faster try {tip}"
