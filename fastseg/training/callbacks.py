"""Training-side outputs that are not the model's concern: preview pictures, the batch-key log and the final
metrics report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytorch_lightning as pl

from .metrics import VAL_METRICS
from .visualize import save_strip


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
