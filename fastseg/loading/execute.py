"""The crop and mmseg recipes executed on the CPU, one sample at a time: what the torch loader's workers and DALI's
feed on the CPU both run, so a sample's pixels do not depend on the backend.

Each step reads the mask first (its size is the image's, by the set's contract), turns the sample's draws into the
window of the source image it keeps, and decodes only that window's region (windows.py; `window_decode` off: the
whole image). OpenCV and Pillow then resample it: on the CPU they are many times faster than DALI's resize, warp
and colour operators (a 512² window, one CPU core: OpenCV's warp 0.28 ms against DALI's warp_affine 9.0 ms), and
like the decoders they release the GIL, so DALI's feed threads run them in parallel.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from . import recipe
from .config import LoaderConfig
from .draws import COLOUR, crop_box, flips
from .members import SampleTable
from .windows import inside

__all__ = ["crop", "mmseg"]


def crop(table: SampleTable, number: int, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """augment="crop": the drawn window resized to `size` (the image bilinearly at pixel centres, antialiased where
    it shrinks, as Pillow's BILINEAR; where it is enlarged along both axes, as at the native size, by OpenCV, whose
    bilinear is then the same filter at several times Pillow's speed; the mask by nearest neighbour), then flipped as
    drawn. H×W×3 and H×W uint8."""
    config: LoaderConfig = table.plan.config
    height, width = config.size
    mask = table.mask(number)
    x0, y0, x1, y1 = crop_box(draws, mask.shape[1], mask.shape[0])
    image, box = table.image_window(number, (y0, x0, y1, x1), config.size, config.window_decode)
    top, left, bottom, right = inside((y0, x0, y1, x1), box)
    if bottom - top <= height and right - left <= width:  # enlarged along both axes: antialiasing changes nothing
        image = recipe.resample_window(image, (top, left, bottom, right), (height, width))
    else:
        image = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR,
                                                       box=(left, top, right, bottom), reducing_gap=None))
    mask = np.array(Image.fromarray(mask).resize((width, height), Image.NEAREST, box=(x0, y0, x1, y1)))
    return _flipped(image, draws), _flipped(mask, draws)


def mmseg(table: SampleTable, number: int, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """augment="mmseg" (recipe.py): the crop of the image and of the mask, at most `size` (the caller pads)."""
    config: LoaderConfig = table.plan.config
    labels, window = recipe.crop_geometry(table.mask(number), draws, config.base_size, config.size,
                                          config.cat_max_ratio)
    image, box = table.image_window(number, window, labels.shape, config.window_decode)
    picture = recipe.resample_window(image, inside(window, box), labels.shape)
    return (recipe.photometric(picture, draws[COLOUR]) if config.photometric else picture), labels


def _flipped(pixels: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Mirrored along the axes the draws flip (OpenCV: one pass, a contiguous result)."""
    horizontal, vertical = flips(draws)
    if horizontal or vertical:
        return cv2.flip(pixels, -1 if horizontal and vertical else 1 if horizontal else 0)
    return pixels
