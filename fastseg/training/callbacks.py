"""Training-side outputs that are not the model's concern: preview pictures, the run's curves and per-class IoU,
the batch-key log and the final metrics report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytorch_lightning as pl
import torch

from .metrics import VAL_METRICS
from .visualize import plot_curves, plot_per_class_iou, save_strip


class PreviewWriter(pl.Callback):
    """Each validation epoch, one PNG of a few samples: image | truth | prediction (rank 0 only)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking or not trainer.is_global_zero or module.preview is None:
            return
        images, truths, preds = module.preview
        h = module.hparams
        save_strip(self.folder / f"epoch_{trainer.current_epoch:03d}.png", images, truths, preds,
                   h.class_colors, h.mean, h.std)


class RunPictures(pl.Callback):
    """After each epoch's validation: OUT/curves.png (train and val loss, val mIoU, images/s, data stall by epoch)
    and OUT/per_class_iou.png (the latest validation's), on rank 0. The training loss is summed on the device and
    read once an epoch, so the steps never wait for the host. Put it after the meter, whose epoch figures it reads."""

    def __init__(self, folder: Path, meter=None):
        self.folder, self.meter = Path(folder), meter
        self.history: list[dict] = []
        self._loss = self._steps = 0

    def on_train_epoch_start(self, trainer, module):
        self._loss, self._steps = torch.zeros((), device=module.device), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        if isinstance(self._loss, torch.Tensor) and outputs is not None:
            self._loss += outputs["loss"].detach() if isinstance(outputs, dict) else outputs.detach()
            self._steps += 1

    def on_train_epoch_end(self, trainer, module):
        metrics = trainer.callback_metrics
        epoch = {"epoch": trainer.current_epoch}
        if self._steps:
            epoch["train_loss"] = float(self._loss) / self._steps
        for key in ("val_loss", "val_miou"):
            if key in metrics:
                epoch[key] = float(metrics[key])
        if self.meter is not None and self.meter.epochs and self.meter.epochs[-1]["epoch"] == trainer.current_epoch:
            epoch.update({k: self.meter.epochs[-1][k] for k in ("images_per_s", "data_stall")})
        self.history.append(epoch)
        if not trainer.is_global_zero:
            return
        plot_curves(self.folder / "curves.png", self.history)
        if module.last_scores is not None:
            h = module.hparams
            ious = [_clean(float(v)) for v in module.last_scores["iou"]]
            plot_per_class_iou(self.folder / "per_class_iou.png", h.class_names, h.class_colors, ious,
                               title=f"per-class IoU, epoch {trainer.current_epoch} (mIoU "
                                     f"{module.last_scores['miou']:.3f})")


class BatchKeyLog(pl.Callback):
    """One JSON line per training step and rank: which samples it trained on (padding left out). A resumed run
    appends, so the file tells what every step of the whole run saw, an interrupted one included."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._file = None

    def on_train_start(self, trainer, module):
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder / f"rank{trainer.global_rank}.jsonl", "a", buffering=1)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        keys = batch["key"][: batch["real"]]  # padding fills the end of a batch; known on the host: no device sync
        self._file.write(json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch,
                                     "batch": batch_index, "keys": keys}) + "\n")

    def on_train_end(self, trainer, module):
        self._file.close()


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def metrics_report(found: dict, class_names: list[str]) -> dict:
    """The metrics.json layout, shared by fastseg-train and fastseg-predict --shards."""
    return {
        **{name: _clean(found[key]) for name, key in VAL_METRICS.items()}, "val_pixels": found["pixels"],
        "per_class_iou": {n: _clean(float(v)) for n, v in zip(class_names, found["iou"])},
        "per_class_dice": {n: _clean(float(v)) for n, v in zip(class_names, found["dice"])},
    }


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(n) for n in report["per_class_iou"]) + 2
    print(f"{'class':<{width}}{'IoU':>8}{'Dice':>8}")
    for name, iou in report["per_class_iou"].items():
        dice = report["per_class_dice"][name]
        print(f"{name:<{width}}{_fmt(iou):>8}{_fmt(dice):>8}")
    print(f"{'mean':<{width}}{_fmt(report['val_miou']):>8}{_fmt(report['val_dice']):>8}   "
          f"pixel accuracy {_fmt(report['val_pixel_acc'])}  →  {path}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
