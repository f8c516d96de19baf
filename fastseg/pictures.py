"""Class-coloured masks, overlays and palette PNGs: the pictures both the set's report (shards/report.py) and a
run's outputs (training/visualize.py) show."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .format import IGNORE_INDEX

IGNORE_COLOR = (255, 0, 255)


def palette_image(indices: np.ndarray, colors: list[list[int]]) -> Image.Image:
    """A 'P' PNG whose indices are the class ids, so a viewer shows colours and a reader gets the ids back."""
    image = Image.fromarray(indices.astype(np.uint8), "P")
    flat = [v for c in colors for v in c[:3]]
    flat += [0] * (3 * IGNORE_INDEX - len(flat)) + list(IGNORE_COLOR)
    image.putpalette(flat)
    return image


def colorize(indices: np.ndarray, colors: list[list[int]]) -> np.ndarray:
    table = np.zeros((256, 3), np.uint8)
    table[: len(colors)] = np.array(colors, np.uint8)[:, :3]
    table[IGNORE_INDEX] = IGNORE_COLOR
    return table[indices]


def overlay(image: np.ndarray, indices: np.ndarray, colors: list[list[int]], alpha: float = 0.5) -> np.ndarray:
    """The mask blended over the image; background (class 0) left clear."""
    tinted = colorize(indices, colors).astype(np.float32)
    weight = np.where(indices[..., None] == 0, 0.0, alpha)
    return (image * (1 - weight) + tinted * weight).astype(np.uint8)
