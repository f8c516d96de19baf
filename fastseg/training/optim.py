"""Optimizers and learning-rate schedules: fastseg's defaults (fused AdamW, cosine over the epochs) and the ones the
published segmentation recipes use (SGD with momentum 0.9, a polynomial decay stepped every iteration, linear
warm-up), as MMSegmentation's `optim_wrapper` and `param_scheduler` define them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import FastsegError
from ..settings import option

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly")
POLY_POWER = 0.9  # MMSegmentation's PolyLR power in every Cityscapes/ADE20K config


@dataclass(frozen=True)
class OptimSettings:
    """How the weights are updated: the optimizer, its rate and decay, and the schedule."""

    optimizer: str = option("adamw", choices=OPTIMIZERS,
                            help="adamw (fused on CUDA), or sgd (momentum 0.9) as the published recipes train")
    lr: float = option(1e-3, type=float, help="the peak learning rate")
    weight_decay: float = option(1e-4, type=float, help="decoupled (AdamW) or L2 (SGD) weight decay")
    schedule: str = option("cosine", choices=SCHEDULES,
                           help="cosine over the epochs, or poly: (1 - step/max_steps) ** 0.9, every iteration")
    warmup_steps: int = option(0, type=int, metavar="N", help="linear warm-up over the first N steps")
    min_lr: float = option(0.0, type=float, help="where the schedule ends (MMSegmentation's eta_min)")
    epochs: int | None = 20  # what cosine spans; None: a run counted in steps (fastseg-train's --epochs/--max-steps)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise FastsegError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise FastsegError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0 or self.min_lr < 0:
            raise FastsegError("--warmup-steps and --min-lr are 0 or more")


def make_optimizer(params, name: str, lr: float, weight_decay: float, cuda: bool) -> torch.optim.Optimizer:
    """AdamW (fused into one kernel on CUDA; elsewhere the foreach default), or SGD with momentum 0.9."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if cuda else None)


def lr_factor(step: int, *, schedule: str, total: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """The learning rate at optimizer step `step` (from 0) as a share of the base rate.

    Warm-up: linear from 1/warmup up to 1 over the first `warmup` steps. Then, over the `total` steps of the run,
    poly: (1 - step / total) ** 0.9, scaled to end at `min_ratio` (MMSegmentation's PolyLR with eta_min); cosine:
    half a cosine from 1 down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(step / max(total, 1), 1.0)
    if schedule == "poly":
        decay = (1 - progress) ** POLY_POWER
    else:
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * decay


def make_schedule(optimizer: torch.optim.Optimizer, *, schedule: str, epochs: int | None, total_steps,
                  warmup: int, min_lr: float, lr: float) -> dict:
    """Lightning's lr_scheduler entry. The default (cosine, no warm-up, a run counted in epochs) steps once an
    epoch, as fastseg always has; everything else steps every iteration, counted in optimizer steps, of which the
    run has `total_steps()` (asked only then: Lightning counts them by building the training loader)."""
    if schedule == "cosine" and not warmup and epochs is not None:
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=min_lr)
        return {"scheduler": cosine, "interval": "epoch"}
    ratio, total_steps = (min_lr / lr if lr else 0.0), total_steps()
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, schedule=schedule, total=total_steps, warmup=warmup, min_ratio=ratio))
    return {"scheduler": lambda_lr, "interval": "step"}


def median_frequency_weights(class_pixels: list[int]) -> list[float]:
    """SegNet's median frequency balancing (Eigen & Fergus 2015, CamVid's published recipe): weight_c =
    median(freq) / freq_c, with freq_c the class's share of the labelled training pixels. The manifest counts
    pixels over the whole split, not per image where the class appears, so freq_c here is the share of all pixels;
    a class with no pixel gets weight 0 (it cannot be learnt)."""
    total = sum(class_pixels)
    freqs = [count / total for count in class_pixels] if total else [0.0] * len(class_pixels)
    present = sorted(f for f in freqs if f > 0)
    if not present:
        return [1.0] * len(class_pixels)
    middle = len(present) // 2
    median = present[middle] if len(present) % 2 else (present[middle - 1] + present[middle]) / 2
    return [median / f if f > 0 else 0.0 for f in freqs]
