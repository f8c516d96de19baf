"""A network of the user's own, as `fastseg-train --model tests.custom_model:build` imports it."""
from __future__ import annotations

from torch import nn


def build(num_classes: int, width: int = 4, depth: int = 2) -> nn.Module:
    """N×3×H×W → N×num_classes×H×W: a few convolutions, nothing a UNet shares."""
    layers, channels = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers, nn.Conv2d(channels, num_classes, 1))


def not_a_module(num_classes: int):
    return "a string"
