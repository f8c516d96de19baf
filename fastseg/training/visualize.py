"""Pictures people look at: class-coloured masks, overlays, and image | truth | prediction strips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..pictures import IGNORE_COLOR, colorize, overlay, palette_image

__all__ = ["IGNORE_COLOR", "colorize", "denormalize", "overlay", "palette_image", "plot_confusion", "plot_curves",
           "plot_per_class_iou", "save_strip"]

def denormalize(image: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """C×H×W normalized tensor → H×W×3 uint8."""
    m = torch.tensor(mean, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, device=image.device).view(3, 1, 1)
    return (image.float() * s + m).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def save_strip(path: Path, images: torch.Tensor, truths: torch.Tensor, preds: torch.Tensor, colors, mean, std,
               limit: int = 4) -> None:
    """One row per sample: image | truth | prediction."""
    rows = []
    for image, truth, pred in list(zip(images, truths, preds))[:limit]:
        picture = denormalize(image, mean, std)
        rows.append(np.concatenate([picture, colorize(truth.cpu().numpy(), colors),
                                    colorize(pred.cpu().numpy(), colors)], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def _pyplot():
    """matplotlib's pyplot on its file-only backend (no display on a training node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, history: list[dict]) -> None:
    """A run's curves by epoch, one panel each: train and val loss, val mIoU, images/s, the data stall. `history`
    holds one dict per epoch (epoch, train_loss, val_loss, val_miou, images_per_s, data_stall; any may be missing)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [("loss", [("train_loss", "train"), ("val_loss", "val")]), ("val mIoU", [("val_miou", None)]),
              ("images/s", [("images_per_s", None)]), ("data stall (share of the step)", [("data_stall", None)])]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), constrained_layout=True)
    for axis, (title, series) in zip(axes, panels):
        for key, label in series:
            points = [(e["epoch"], e[key]) for e in history if e.get(key) is not None]
            if points:
                epochs, values = zip(*points)
                axis.plot(epochs, values, marker="o", label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if len(series) > 1:
            axis.legend()
    axes[1].set_ylim(0, 1)
    axes[2].set_ylim(bottom=0)  # rates from zero: epoch-to-epoch noise is not a trend
    axes[3].set_ylim(bottom=0)
    _save(figure, path)


def plot_per_class_iou(path: Path, names: list[str], colors: list[list[int]], ious: list[float | None],
                       title: str = "per-class IoU") -> None:
    """One bar a class in the class's own colour, its value beside it; a class with no score (absent from truth and
    prediction) marked so."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2), constrained_layout=True)
    values = [0.0 if v is None else v for v in ious]
    axis.barh(range(len(names)), values, color=[np.array(c[:3]) / 255 for c in colors], edgecolor="black")
    for row, value in enumerate(ious):
        axis.text((value or 0) + 0.01, row, "no pixels" if value is None else f"{value:.3f}", va="center")
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    axis.set_xlim(0, 1.15)
    axis.set_xlabel("IoU")
    axis.set_title(title)
    _save(figure, path)


def plot_confusion(path: Path, confusion: np.ndarray, names: list[str]) -> None:
    """The confusion matrix normalised by row (each true class's pixels sum to 1), with the class names."""
    plt = _pyplot()
    counts = np.asarray(confusion, np.float64)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = 0.5 * len(names) + 2.5
    figure, axis = plt.subplots(figsize=(side + 1, side), constrained_layout=True)
    shown = axis.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (true, predicted), share in np.ndenumerate(rows):
        axis.text(predicted, true, f"{share:.2f}", ha="center", va="center",
                  color="white" if share > 0.5 else "black", fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion (each row: a true class's pixels)")
    figure.colorbar(shown, ax=axis)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    """Written whole or not at all: a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, dpi=100, format="png")
    figure.clf()
    _pyplot().close(figure)
    partial.replace(path)
