"""Scoring as the published benchmarks score: predictions compared with each original label, at its own resolution.

A validation image reaches the model resized to the evaluation scale (the loader's `original_labels` batches), is
padded at the bottom and right to a multiple of the network's stride, and run whole or window by window
(MMSegmentation's `test_cfg=dict(mode='whole')` and `mode='slide'`); its logits are cropped back to the resized
image, resized bilinearly to the label's size, and only then turned into classes. Every labelled pixel of every
original label is counted once. `Scoring(at_labels=False)` keeps the quick rule of earlier versions: masks resized
(nearest neighbour) to the training size, scored there.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from ..errors import FastsegError
from .losses import predict
from .metrics import confusion_metric, scores

__all__ = ["MODES", "Scoring", "label_logits", "network_stride", "run_padded", "score_loader", "slide_logits"]
MODES = ("whole", "slide")
Run = Callable[[torch.Tensor], torch.Tensor]  # N×3×H×W normalized images → N×C×H×W logits


@dataclass(frozen=True)
class Scoring:
    at_labels: bool = True  # False: masks resized to the training size and scored there (--eval-at-train-size)
    size: tuple[int, int] | None = None  # --eval-size: fit this scale, aspect kept; None: the training size, as trained
    mode: str = "whole"  # one of MODES
    window: tuple[int, int] | None = None  # slide: the window (H, W) and the step between windows (H, W)
    stride: tuple[int, int] | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise FastsegError(f"unknown evaluation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if (self.mode == "slide") != (self.window is not None and self.stride is not None):
            raise FastsegError("--eval-mode slide takes --window H W and --stride H W (MMSegmentation's crop_size "
                               "and stride); whole takes neither")
        for name in ("size", "window", "stride"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 2 or min(value) < 1:
                    raise FastsegError(f"the evaluation {name} is H W, two positive numbers, not {value!r}")
                object.__setattr__(self, name, (int(value[0]), int(value[1])))
        if not self.at_labels and (self.size is not None or self.mode != "whole"):
            raise FastsegError("--eval-at-train-size scores at the training size, whole images; it takes neither "
                               "--eval-size nor --eval-mode slide")

    def with_default_size(self, size: tuple[int, int] | None) -> Scoring:
        """The scale to fit when none was given: a model trained on crops of randomly resized images (the mmseg
        recipe) is scored at its base size, aspect kept, as MMSegmentation's test pipeline resizes."""
        if not self.at_labels or self.size is not None or size is None:
            return self
        return replace(self, size=tuple(size))

    def loader_options(self, train_size: tuple[int, int]) -> dict:
        """The validation loader's options (LoaderConfig fields) for this way of scoring."""
        if not self.at_labels:
            return {"original_labels": False, "size": tuple(train_size), "keep_ratio": False}
        return {"original_labels": True, "size": self.size or tuple(train_size), "keep_ratio": self.size is not None}

    def describe(self, train_size: tuple[int, int]) -> dict:
        """How it was scored, for metrics.json."""
        if not self.at_labels:
            return {"scored_at": "train size", "eval_mode": "whole", "eval_size": list(train_size),
                    "eval_resize": "labels resized (nearest) to the training size"}
        found = {"scored_at": "label resolution", "eval_mode": self.mode, "eval_size": list(self.size or train_size),
                 "eval_resize": "aspect kept, fit to eval_size" if self.size else "to the training size, as trained"}
        if self.mode == "slide":
            found.update(window=list(self.window), stride=list(self.stride))
        return found


def network_stride(model: torch.nn.Module) -> int:
    """What an input side must divide by: the network's own `stride` or `output_stride` attribute (the UNet's is
    16), else 32, which the common encoders (ResNet, EfficientNet, …) need."""
    for name in ("stride", "output_stride"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 32


def run_padded(run: Run, images: torch.Tensor, multiple: int) -> torch.Tensor:
    """The logits of images padded with 0 at the bottom and right to a multiple of `multiple`, cropped back."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, -width % multiple, 0, -height % multiple))
    return run(padded)[..., :height, :width]


def slide_logits(run: Run, image: torch.Tensor, window: tuple[int, int], stride: tuple[int, int], multiple: int,
                 batch: int) -> torch.Tensor:
    """MMSegmentation's slide inference over one 1×3×H×W image: windows every `stride` (the last flush with the
    far edge), logits averaged where they overlap. The windows go through the network `batch` at a time."""
    height, width = image.shape[-2:]
    (wh, ww), (sh, sw) = window, stride
    boxes = []
    for row in range(max(height - wh + sh - 1, 0) // sh + 1):
        for col in range(max(width - ww + sw - 1, 0) // sw + 1):
            y1, x1 = row * sh, col * sw
            y2, x2 = min(y1 + wh, height), min(x1 + ww, width)
            boxes.append((max(y2 - wh, 0), max(x2 - ww, 0), y2, x2))
    total = count = None
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        crops = torch.cat([image[..., y1:y2, x1:x2] for y1, x1, y2, x2 in chunk])
        logits = run_padded(run, crops, multiple).float()
        if total is None:
            total = logits.new_zeros((1, logits.shape[1], height, width))
            count = logits.new_zeros((1, 1, height, width))
        for logit, (y1, x1, y2, x2) in zip(logits, chunk):
            total[..., y1:y2, x1:x2] += logit
            count[..., y1:y2, x1:x2] += 1
    return total / count


def label_logits(run: Run, batch: dict, scoring: Scoring, multiple: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Per real sample of an `original_labels` batch: (1×C×h×w logits at the resized image's size, 1×C×H×W logits
    at its label's size, its 1×H×W label, or None in a batch without masks). Whole mode runs the samples whose padded sizes agree as one batch (each
    is then exactly as it would be alone: its padding is 0 either way)."""
    images, sizes = batch["image"], batch["sizes"][:batch.get("real", len(batch["sizes"]))]

    def at_label(index: int, logits: torch.Tensor):
        height, width, rows, cols = sizes[index]
        logits = logits[..., :height, :width].float()
        scaled = logits if (height, width) == (rows, cols) else \
            F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=False)
        return logits, scaled, batch["mask"][index:index + 1, :rows, :cols] if "mask" in batch else None

    if scoring.mode == "slide":
        for index, (height, width, _, _) in enumerate(sizes):
            yield at_label(index, slide_logits(run, images[index:index + 1, :, :height, :width], scoring.window,
                                               scoring.stride, multiple, images.shape[0]))
        return
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (height, width, _, _) in enumerate(sizes):
        groups.setdefault((math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple),
                          []).append(index)
    for (rows, cols), members in groups.items():
        chosen = images if len(members) == images.shape[0] else images[members]
        chosen = F.pad(chosen[..., :rows, :cols], (0, max(cols - chosen.shape[-1], 0), 0,
                                                   max(rows - chosen.shape[-2], 0)))
        logits = run(chosen)
        for k, index in enumerate(members):
            yield at_label(index, logits[k:k + 1])


@torch.no_grad()
def score_loader(module, batches, scoring: Scoring) -> dict:
    """The scores (metrics.scores) of a SegModule over an iterable of batches: `original_labels` batches when
    scoring at the labels' resolution, batches at the training size otherwise."""
    h = module.hparams
    confusion = confusion_metric(len(h.class_names), h.ignore_index).to(module.device)
    for batch in batches:
        if scoring.at_labels:
            for _, logits, mask in label_logits(module, batch, scoring, module.stride):
                confusion.update(predict(logits), mask)
        else:
            confusion.update(predict(module(batch["image"])), batch["mask"])
    return scores(confusion.compute())
