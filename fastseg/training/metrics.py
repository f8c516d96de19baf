"""Scores from an accumulated confusion matrix: counts first (summed across ranks by torchmetrics), then ratios."""
from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

# The logged and reported name of each mean score (module logs, metrics.json); both read this one table.
VAL_METRICS = {"val_miou": "miou", "val_dice": "dice_mean", "val_precision": "precision_mean",
               "val_recall": "recall_mean", "val_f1": "f1", "val_pixel_acc": "pixel_acc"}


def confusion_metric(num_classes: int, ignore_index: int) -> MulticlassConfusionMatrix:
    """Counts over the whole validation set; torchmetrics syncs (sums) them across DDP ranks in compute()."""
    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)


def scores(confusion: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """Per-class IoU/Dice/precision/recall, their means over classes present, and pixel accuracy.
    confusion[t, p] counts pixels of true class t predicted as p. A class absent from both truth and prediction
    has no score (NaN) and is left out of the means."""
    cm = confusion.double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)

    def ratio(num, den):
        return torch.where(den > 0, num / den.clamp(min=1), nan)

    iou, dice = ratio(tp, tp + fp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "iou": iou, "dice": dice, "precision": precision, "recall": recall,
        "miou": float(iou.nanmean()), "dice_mean": float(dice.nanmean()),
        "precision_mean": float(precision.nanmean()), "recall_mean": float(recall.nanmean()),
        "f1": float(dice.nanmean()),  # per class, F1 and Dice are the same number
        "pixel_acc": float(tp.sum() / cm.sum().clamp(min=1)), "pixels": int(cm.sum()),
        "confusion": confusion.cpu(),
    }
