"""The draws' parts and layouts: what the sample jobs (job_*.py) draw their parameters from, each from a generator
seeded by (seed, epoch, sample) alone (jobs.sample_draws), laid out as one float32 vector.

The torch loader's workers draw for the sample they load; the DALI pipeline's feed draws for each sample of a batch
and hands the graph what the job makes of the draws, which it only executes. So a seed gives the same flips and
the same windows through either loader, and since nothing depends on what was drawn before, a loader resumed at any
batch draws what an uninterrupted one would have.

The layouts (every job's start with the flip coins, 1.0 or 0.0):
  flip   [hflip, vflip]
  crop   [hflip, vflip, top, left, bottom, right]: the window as fractions of the image, unflipped
  mmseg  [hflip, vflip, ratio, brightness, contrast, saturation, hue, DRAWS corner pairs]: MMSegmentation's
         RandomResize ratio, PhotoMetricDistortion's values (identity where its coin said no), and the uniform
         [0, 1) pairs that RandomCrop turns into crop positions (recipe.pick_crop: the choice needs the mask)
  rotate [hflip, vflip, angle]: the angle in degrees, uniform in ±degrees
"""
from __future__ import annotations

import math

import numpy as np

from .config import LoaderConfig

__all__ = ["ANGLE", "BRIGHTNESS", "COLOUR", "CONTRAST", "CORNERS", "CROP_TRIES", "DRAWS", "HFLIP", "HUE", "RATIO",
           "SATURATION", "VFLIP", "WINDOW", "coins", "crop_box", "crop_window", "draw_crop", "flips",
           "photometric_draws", "roi"]
HFLIP, VFLIP = 0, 1
WINDOW = slice(2, 6)  # crop
RATIO, COLOUR = 2, slice(3, 7)  # mmseg
CROP_TRIES = 10  # MMSegmentation's RandomCrop: a crop one class fills is drawn again up to 10 times, the last kept
DRAWS = CROP_TRIES + 1  # crop positions drawn per sample: the first and up to 10 more
CORNERS = slice(7, 7 + 2 * DRAWS)  # mmseg
ANGLE = 2  # rotate
BRIGHTNESS, CONTRAST, SATURATION, HUE = 32.0, (0.5, 1.5), (0.5, 1.5), 18  # PhotoMetricDistortion's defaults


def coins(rng: np.random.Generator, config: LoaderConfig) -> tuple[float, float]:
    """The flip coins, p = 0.5 each; the vertical one is drawn only with vflip (so vflip=False draws one number)."""
    hflip = rng.uniform() < 0.5
    return float(hflip), float(config.vflip and rng.uniform() < 0.5)


def crop_window(rng: np.random.Generator, scale: tuple[float, float]) -> tuple[float, float, float, float]:
    """A random crop (top, left, bottom, right) as fractions of the image: area fraction in `scale`, aspect in
    [3/4, 4/3]."""
    area = rng.uniform(*scale)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    width, height = min(math.sqrt(area * ratio), 1.0), min(math.sqrt(area / ratio), 1.0)
    left, top = rng.uniform() * (1 - width), rng.uniform() * (1 - height)
    return top, left, top + height, left + width


def draw_crop(rng: np.random.Generator, width: int, height: int, scale) -> tuple[float, float, float, float]:
    """crop_window as a box (x0, y0, x1, y1) in the pixels of a width × height image, as Pillow's resize takes it."""
    top, left, bottom, right = crop_window(rng, scale)
    return left * width, top * height, right * width, bottom * height


def crop_box(draws: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """The crop job's window as a box (x0, y0, x1, y1) in the pixels of a width × height image, as Pillow's
    resize takes it (unflipped: the flips come after)."""
    top, left, bottom, right = (float(v) for v in draws[WINDOW])
    return left * width, top * height, right * width, bottom * height


def flips(draws: np.ndarray) -> tuple[bool, bool]:
    """(horizontal, vertical): whether the sample is mirrored along each axis."""
    return bool(draws[HFLIP]), bool(draws[VFLIP])


def roi(draws: np.ndarray) -> np.ndarray:
    """The crop job's window as DALI's resize reads it, (start row, start column, end row, end column) as
    fractions, its start and end swapped along a flipped axis: resampling then mirrors image and mask alike."""
    top, left, bottom, right = (float(v) for v in draws[WINDOW])
    hflip, vflip = flips(draws)
    return np.array([bottom if vflip else top, right if hflip else left,
                     top if vflip else bottom, left if hflip else right], np.float32)


def photometric_draws(rng: np.random.Generator) -> np.ndarray:
    """One sample's colour draws (brightness shift, contrast factor, saturation factor, hue in degrees), identity
    where its coin says no."""
    coin = rng.uniform(size=4) < 0.5
    return np.array([rng.uniform(-BRIGHTNESS, BRIGHTNESS) if coin[0] else 0.0,
                     rng.uniform(*CONTRAST) if coin[1] else 1.0, rng.uniform(*SATURATION) if coin[2] else 1.0,
                     2.0 * int(rng.integers(-HUE, HUE + 1)) if coin[3] else 0.0], np.float32)
