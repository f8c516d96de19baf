"""Segmentation losses with an ignore index: BCE for one foreground class, cross-entropy for several, + Dice."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..format import IGNORE_INDEX


def out_channels(num_classes: int) -> int:
    """Two classes (background/foreground) train one logit with BCE; more train one logit per class."""
    return 1 if num_classes == 2 else num_classes


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """N×C×H×W class probabilities, whatever the head (a binary head becomes background/foreground)."""
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        return torch.cat([1 - fg, fg], dim=1)
    return torch.softmax(logits, dim=1)


def predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int) -> torch.Tensor:
    probs = probabilities(logits.float())
    valid = (mask != ignore_index).unsqueeze(1)
    target = F.one_hot(torch.where(valid[:, 0], mask, 0), probs.shape[1]).permute(0, 3, 1, 2)
    probs, target = probs * valid, target * valid
    inter = (probs * target).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + 1) / (total + 1)).mean()


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                      dice_weight: float = 0.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the pixels that are not ignored; zero (with a gradient path) if every pixel is ignored. With
    `class_weights` (one per class), each pixel counts by its class's weight, and the mean is over the weights,
    as torch's weighted cross-entropy takes it."""
    valid = mask != ignore_index
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0].float(), valid * mask.float(), reduction="none")
    else:
        per_pixel = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index, reduction="none")
    weight = valid.float() if class_weights is None else class_weights[torch.where(valid, mask, 0)] * valid
    loss = (per_pixel * weight).sum() / weight.sum().clamp(min=1e-12)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, mask, ignore_index)
    return loss
