"""augment="none" and "flip": the whole image at the output size (resized only where it differs: at the native size
no resampling), and for flip paired horizontal flips (and with vflip, vertical ones), p = 0.5 each.

Draws: [hflip, vflip] (draws.py's coins). On DALI the image is mirrored inside crop_mirror_normalize, for free."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .draws import coins, flips
from .job import Job, Record, Sample


class Whole(Job):
    """The whole image at `size`, flipped where `flipping` and the draws say so."""

    def __init__(self, name: str, flipping: bool):
        self.name, self.flipping = name, flipping
        self.parameters = Record(np.int32, hflip=1, vflip=1) if flipping else None

    def draw(self, rng, config):
        return np.array(coins(rng, config), np.float32) if self.flipping else None

    def cpu(self, table, number, draws):
        image, mask = table.pixels(number)
        height, width = table.plan.config.size
        if image.shape[:2] != (height, width):
            image = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR, reducing_gap=None))
            mask = np.array(Image.fromarray(mask).resize((width, height), Image.NEAREST))
        return Sample(*(flipped(pixels, draws) for pixels in (image, mask)))

    def feed_row(self, table, number, draws, row):
        if not self.flipping:
            return row
        horizontal, vertical = flips(draws)
        return row + [self.parameters.pack(hflip=horizontal, vflip=vertical)]

    def graph(self, ops, image, mask, size, parameters, stop_after):
        image, mask = ops.decode(image, mask, size)
        if stop_after == "decode":
            return image, ops.on_device(mask)
        mask = ops.on_device(mask)
        if not ops.plan.native:  # resampling is the costliest CPU step: only when the output size asks for it
            image, mask = ops.resize(image, mask, ops.plan.size)
        mirror = 0
        if self.flipping:
            mirror = self.parameters.read(parameters, "hflip")
            vflip = self.parameters.read(parameters, "vflip") if ops.plan.config.vflip else 0
            mask = ops.flip(mask, mirror, vflip)
            if ops.plan.config.vflip:
                image = ops.flip(image, 0, vflip)
        if stop_after == "augment":
            return image, mask
        return ops.normalize(image, mask, mirror=mirror)


def flipped(pixels: np.ndarray, draws: np.ndarray | None) -> np.ndarray:
    """Mirrored along the axes the draws flip (OpenCV: one pass, a contiguous result)."""
    horizontal, vertical = flips(draws) if draws is not None else (False, False)
    if horizontal or vertical:
        return cv2.flip(pixels, -1 if horizontal and vertical else 1 if horizontal else 0)
    return pixels


NONE, FLIP = Whole("none", flipping=False), Whole("flip", flipping=True)
