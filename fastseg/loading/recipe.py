"""The standard training recipe of the published Cityscapes, ADE20K and VOC results (`augment="mmseg"`):
MMSegmentation 1.x's RandomResize(ratio_range, keep_ratio) → RandomCrop(crop_size, cat_max_ratio) → RandomFlip(0.5)
→ PhotoMetricDistortion, with the crop padded (image 0 after normalization, mask ignore) where the resized image is
smaller than it, as its data preprocessor pads.

What a sample's draws (draws.py: made once, from the seed, the epoch and the sample) mean in this recipe lives
here, so that the backends only execute it: the resized size, the crop chosen from the drawn positions with its
cat_max_ratio check (`pick_crop`, which needs the mask), the image's window, and the colour steps (`photometric`).
The same geometry serves image and mask alike.

Colour steps, each with p = 0.5: brightness + U(-32, 32); contrast × U(0.5, 1.5); saturation × U(0.5, 1.5) and hue
+ an integer of U{-18..18} on OpenCV's 0..180 scale (× 2 degrees). Saturation and hue are applied as DALI's `hsv`
operator applies them, one linear step in YIQ space (chroma scaled and rotated), rather than through OpenCV's HSV
cone, which has no DALI equivalent. All the steps are then linear in the pixel, so they compose into one affine
colour transform (colour_transform), applied once and rounded and clipped to 0..255 as uint8 is: where
MMSegmentation clips after every step, this differs only for pixels an intermediate step pushes out of range, and
the order of contrast (before or after the colour steps, MMSegmentation's random `mode`) no longer matters. One
transform is also what makes it cheap on the CPU (`photometric`); both backends and the GPU apply the same one.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..format import IGNORE_INDEX
from .config import keep_ratio_size
from .draws import CORNERS, CROP_TRIES, HFLIP, RATIO, VFLIP

__all__ = ["acceptable", "colour_transform", "count_stride", "crop_geometry", "hsv_matrix", "nearest_map",
           "photometric", "pick_crop",
           "resample_window", "resized_size"]
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])


def resized_size(rows: int, cols: int, base: tuple[int, int], ratio: float) -> tuple[int, int]:
    """RandomResize(scale=base, ratio_range, keep_ratio=True): the scale base·ratio (truncated, as MMSegmentation
    does), then the aspect-kept fit to it."""
    return keep_ratio_size(rows, cols, (int(base[0] * ratio), int(base[1] * ratio)))


def acceptable(window: np.ndarray, cat_max_ratio: float) -> bool:
    """RandomCrop's test: more than one class among the labelled pixels, and none above `cat_max_ratio` of them."""
    counts = cv2.calcHist([window], [0], None, [256], [0, 256]).ravel()[:IGNORE_INDEX]
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def nearest_map(size: int, source: int) -> np.ndarray:
    """For each of `size` pixels along an axis of a resized image, the `source` pixel nearest its centre: nearest-
    neighbour resizing (Pillow's and OpenCV's INTER_NEAREST_EXACT rule, up to their fixed-point rounding)."""
    return np.minimum(((np.arange(size) + 0.5) * (source / size)).astype(np.intp), source - 1)


def count_stride(crop: tuple[int, int]) -> int:
    """cat_max_ratio counts the classes at every n-th row and column of a crop, n such that at least 128×128 of its
    pixels are counted: a class's share is then within about a percent of the exact one, and the recipe's crop
    statistics those of MMSegmentation's exact count (tests/test_windows.py), at a sixteenth of the cost at 512²."""
    return max(1, min(crop) // 128)


def pick_crop(mask: np.ndarray, resized: tuple[int, int], crop: tuple[int, int], draws: np.ndarray,
              cat_max_ratio: float) -> tuple[int, int]:
    """The crop's top-left corner (row, column) in `mask` resized to `resized` (rows, columns) by nearest neighbour,
    a resized mask that is never made: each candidate's labels are read from `mask` through nearest_map. `draws`
    holds draws.DRAWS uniform [0, 1) pairs: each becomes a position in the margin; the first that passes
    `acceptable` wins (with cat_max_ratio < 1), the last is kept if none of the first CROP_TRIES does:
    MMSegmentation's RandomCrop."""
    (rows, cols), (height, width) = resized, crop
    margin_rows, margin_cols = max(rows - height, 0), max(cols - width, 0)
    corners = [(min(int(u * (margin_rows + 1)), margin_rows), min(int(v * (margin_cols + 1)), margin_cols))
               for u, v in np.asarray(draws, np.float64).reshape(-1, 2)]
    if cat_max_ratio >= 1:
        return corners[0]
    step = count_stride(crop)
    row_map, col_map = nearest_map(rows, mask.shape[0]), nearest_map(cols, mask.shape[1])
    for top, left in corners[:CROP_TRIES]:
        counted = mask[np.ix_(row_map[top:top + height:step], col_map[left:left + width:step])]
        if acceptable(counted, cat_max_ratio):
            return top, left
    return corners[-1]


def crop_geometry(mask: np.ndarray, draws: np.ndarray, base: tuple[int, int], crop: tuple[int, int],
                  cat_max_ratio: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The mask of the crop (the resized mask cut and flipped: nearest neighbour at pixel centres, read straight from
    `mask`) and the crop's window in the source image, (top, left, bottom, right) in pixel-edge coordinates with the
    edges swapped along a flipped axis: what the image is resampled from, by OpenCV here or by DALI's resize on a
    GPU."""
    rows, cols = mask.shape[:2]
    resized = resized_size(rows, cols, base, float(draws[RATIO]))
    top, left = pick_crop(mask, resized, crop, draws[CORNERS], cat_max_ratio)
    row_map = nearest_map(resized[0], rows)[top:top + crop[0]]
    col_map = nearest_map(resized[1], cols)[left:left + crop[1]]
    height, width = len(row_map), len(col_map)
    scale_rows, scale_cols = rows / resized[0], cols / resized[1]
    window = [top * scale_rows, left * scale_cols, (top + height) * scale_rows, (left + width) * scale_cols]
    if draws[HFLIP]:
        col_map, window[1], window[3] = col_map[::-1], window[3], window[1]
    if draws[VFLIP]:
        row_map, window[0], window[2] = row_map[::-1], window[2], window[0]
    return mask.take(row_map, axis=0).take(col_map, axis=1), tuple(window)


def resample_window(image: np.ndarray, window, shape: tuple[int, int]) -> np.ndarray:
    """The source window (crop_geometry's) resampled to `shape` (rows, columns) bilinearly at pixel centres, as
    OpenCV's resize samples (MMSegmentation's rule: no antialiasing), flipped where the window's edges are swapped;
    the same pixels as resizing the whole image and cutting the crop out."""
    top, left, bottom, right = window
    rows, cols = shape
    step_y, step_x = (bottom - top) / rows, (right - left) / cols
    affine = np.array([[step_x, 0, left + 0.5 * step_x - 0.5], [0, step_y, top + 0.5 * step_y - 0.5]], np.float64)
    return cv2.warpAffine(image, affine, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def hsv_matrix(hue_degrees: float, saturation: float) -> np.ndarray:
    """The 3×3 RGB matrix of DALI's `hsv` operator: to YIQ, chroma scaled by `saturation` and rotated by the hue,
    back to RGB (checked against DALI in tests/test_recipe.py)."""
    angle = math.radians(hue_degrees)
    rotate = np.array([[1, 0, 0], [0, math.cos(angle), math.sin(angle)], [0, -math.sin(angle), math.cos(angle)]])
    return np.linalg.inv(RGB_TO_YIQ) @ rotate @ np.diag([1.0, saturation, saturation]) @ RGB_TO_YIQ


def colour_transform(draws) -> np.ndarray:
    """The 3×4 affine [M | t] of the colour steps composed: brightness, contrast and saturation/hue are all linear
    in the pixel, so together they are out = contrast · H · (pixel + brightness), whichever order contrast comes in."""
    brightness, contrast, saturation, hue = (float(v) for v in draws)
    matrix = contrast * hsv_matrix(hue, saturation)
    return np.hstack([matrix, (matrix @ np.full(3, brightness))[:, None]]).astype(np.float32)


def photometric(image: np.ndarray, draws) -> np.ndarray:
    """PhotoMetricDistortion on an H×W×3 uint8 image: one affine colour transform, rounded and clipped to 0..255
    (OpenCV's `transform`: 0.2 ms for 512×512 where numpy takes 1.7 ms and DALI's CPU `hsv` operator 7)."""
    return cv2.transform(np.ascontiguousarray(image), colour_transform(draws))
