"""Decode only what a sample keeps: the region of its image that a drawn window needs, found before decoding.

A crop (the crop job) or a crop of a resized image (mmseg) is resampled from a window of the source image, in
pixel-edge coordinates (top, left, bottom, right; the edges swapped along a flipped axis). Resampling reads the
pixels the window covers plus the filter's reach around it: one pixel for bilinear sampling, the shrink factor
where an antialiased filter shrinks. `region` is that box in whole pixels, clamped to the image, so resampling the
region alone (`inside`: the window in the region's coordinates) gives the pixels resampling the whole image would.

Where the window shrinks by 2 or more along both axes, the region is decoded at a reduced scale instead
(libjpeg-turbo's DCT scaling: 1/2, 1/4, 1/8), in that scale's pixels; what is left of the shrink is resampled as
before, so the result differs from a full decode by resampling's own rounding, not by geometry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FACTORS", "Region", "decode_region", "inside", "region", "whole"]
FACTORS = (8, 4, 2)  # the reduced scales libjpeg-turbo decodes at (1/factor), largest first


@dataclass(frozen=True)
class Region:
    """Rows top..bottom and columns left..right (end excluded) of the image decoded at 1/factor of its size, in that
    scale's pixels."""

    top: int
    left: int
    bottom: int
    right: int
    factor: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left


def whole(rows: int, cols: int) -> Region:
    """The whole image at full scale: what a loader decodes with window decoding off."""
    return Region(0, 0, rows, cols)


def region(window, image: tuple[int, int], out: tuple[int, int], reducible: bool = False) -> Region:
    """The region of a rows × cols `image` that resampling `window` to `out` (rows, columns) reads; at a reduced
    scale where `reducible` (a JPEG) and the window shrinks by a factor in FACTORS or more along both axes."""
    top, left, bottom, right = window
    top, bottom = sorted((float(top), float(bottom)))
    left, right = sorted((float(left), float(right)))
    shrink = min((bottom - top) / out[0], (right - left) / out[1])
    factor = next((f for f in FACTORS if reducible and shrink >= f), 1)
    rows, cols = (math.ceil(side / factor) for side in image)  # libjpeg-turbo rounds a scaled side up
    reach = math.ceil(max(shrink / factor, 1.0)) + 1  # the filter's support, in the decoded scale's pixels
    return Region(max(0, math.floor(top / factor) - reach), max(0, math.floor(left / factor) - reach),
                  min(rows, math.ceil(bottom / factor) + reach), min(cols, math.ceil(right / factor) + reach), factor)


def decode_region(window, image: tuple[int, int], out: tuple[int, int], windowed: bool) -> Region:
    """What the GPU graph decodes of an image for `window`: `region` where `windowed` (window decoding on, and an
    encoded image), else the whole image."""
    return region(window, image, out) if windowed else whole(*image)


def inside(window, box: Region) -> tuple[float, float, float, float]:
    """`window` (full-scale pixel edges, flipped edges kept) in the coordinates of the decoded `box`."""
    top, left, bottom, right = (float(v) / box.factor for v in window)
    return top - box.top, left - box.left, bottom - box.top, right - box.left
