"""augment="rotate": a random rotation within ±`degrees` about the image's centre, plus the flips, as
MMSegmentation's RandomRotate does for aerial and medical sets (with its prob at 1: every sample is rotated; an
angle near 0 is as likely as any other), at the output size.

Draws: [hflip, vflip, angle in degrees]. The rotation, the flips and the resize to `size` are one affine map from
each output pixel to the source image, so image and mask are resampled once: the image bilinearly, the mask by
nearest neighbour (no new classes). What the rotated image does not cover is 0 in the image and ignore (255) in the
mask, so the loss never learns the corners. The torch loader's workers and DALI's feed on the CPU warp with OpenCV;
on a GPU the graph warps with DALI's warp_affine, from the same matrix in DALI's pixel convention (pixel centres at
half-integers), and agrees with OpenCV's nearest neighbour except where a sample falls on a pixel edge."""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..format import IGNORE_INDEX
from .draws import ANGLE, coins, flips
from .job import Job, Record, Sample


class Rotate(Job):
    name = "rotate"
    in_feed_on_cpu = True
    parameters = Record(np.float32, matrix=6)  # output pixel -> source pixel, DALI's convention

    def draw(self, rng, config):
        return np.array([*coins(rng, config), rng.uniform(-config.degrees, config.degrees)], np.float32)

    def cpu(self, table, number, draws):
        image, mask = table.pixels(number)
        height, width = table.plan.config.size
        matrix = source_map(draws, image.shape[:2], (height, width))
        flags = cv2.WARP_INVERSE_MAP  # the matrix maps an output pixel to where it is read in the source
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR | flags,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_NEAREST | flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX)
        return Sample(image, mask)

    def feed_row(self, table, number, draws, row):
        matrix = source_map(draws, table.row_shape(row), table.plan.config.size)
        # DALI's coordinates put pixel centres at half-integers, OpenCV's at integers: x' = x + 1/2 on both sides
        linear, shift = matrix[:, :2], matrix[:, 2]
        return row + [self.parameters.pack(matrix=np.hstack([linear, (shift + 0.5 - linear.sum(1) * 0.5)[:, None]]))]

    def graph(self, ops, image, mask, size, parameters, stop_after):
        image, mask = ops.decode(image, mask, size)
        if stop_after == "decode":
            return image, ops.on_device(mask)
        image, mask = ops.warp(image, ops.on_device(mask), self.parameters.read(parameters, "matrix"),
                               ops.plan.config.size)
        if stop_after == "augment":
            return image, mask
        return ops.normalize(image, mask)


def source_map(draws: np.ndarray, source: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """The 2×3 affine map (OpenCV's pixel convention: centres at integers) from an output pixel (x, y) of an `out`
    (rows, columns) sample to the point of the `source` (rows, columns) image it is read from: flipped as drawn,
    turned back by the drawn angle about the centre, and scaled from the output size to the source's."""
    (rows, cols), (height, width) = source, out
    horizontal, vertical = flips(draws)
    flip = np.array([[-1.0 if horizontal else 1.0, 0, width - 1.0 if horizontal else 0],
                     [0, -1.0 if vertical else 1.0, height - 1.0 if vertical else 0], [0, 0, 1]])
    centre_out, centre_source = ((width - 1) / 2, (height - 1) / 2), ((cols - 1) / 2, (rows - 1) / 2)
    angle = math.radians(float(draws[ANGLE]))
    cos, sin = math.cos(angle), math.sin(angle)
    # output (x, y) -> rotated back about the output's centre -> scaled to the source -> the source's centre
    scale = np.diag([cols / width, rows / height, 1.0])
    back = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    to_centre = np.array([[1, 0, -centre_out[0]], [0, 1, -centre_out[1]], [0, 0, 1]])
    from_centre = np.array([[1, 0, centre_source[0]], [0, 1, centre_source[1]], [0, 0, 1]])
    return (from_centre @ scale @ back @ to_centre @ flip)[:2].astype(np.float32)


ROTATE = Rotate()
