"""The evaluation flags fastseg-train and fastseg-predict --shards share, and the Scoring they make."""
from __future__ import annotations

import argparse

from ..training.scoring import MODES, Scoring


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation (scored at the labels' own resolution unless told otherwise)")
    group.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"),
                       help="resize validation images to fit this scale, aspect kept (MMSegmentation's "
                            "Resize(scale, keep_ratio=True)); default: to the training size, as training resizes")
    group.add_argument("--eval-mode", choices=MODES, default="whole",
                       help="whole images, or windows with overlapping logits averaged (test_cfg mode; default "
                            "whole)")
    group.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="slide: the window (crop_size)")
    group.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide: the step between windows")
    group.add_argument("--eval-at-train-size", action="store_true",
                       help="the quick rule: labels resized (nearest) to the training size and scored there; not "
                            "comparable with published scores")


def scoring_from(args: argparse.Namespace) -> Scoring:
    return Scoring(at_labels=not args.eval_at_train_size, size=args.eval_size, mode=args.eval_mode,
                   window=args.window, stride=args.stride)
