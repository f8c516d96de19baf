"""The draws: every random parameter of a sample, made once, from (seed, epoch, sample) alone.

A recipe here is a function from a seeded generator to one sample's parameters, laid out as one float32 vector;
`sample_draws` picks the recipe by the config's augmentation. The torch loader's workers call it for the sample
they load; the DALI pipeline's feed calls it for each sample of a batch and hands the vector (or what `roi` and
`flips` make of it) to the graph, which only executes it. So a seed gives the same flips and the same windows
through either loader, and since nothing depends on what was drawn before, a loader resumed at any batch draws
what an uninterrupted one would have.

The layout (every recipe starts with the flip coins, 1.0 or 0.0):
  flip   [hflip, vflip]
  crop   [hflip, vflip, top, left, bottom, right]: the window as fractions of the image, unflipped
  mmseg  [hflip, vflip, ratio, brightness, contrast, saturation, hue, DRAWS corner pairs]: MMSegmentation's
         RandomResize ratio, PhotoMetricDistortion's values (identity where its coin said no), and the uniform
         [0, 1) pairs that RandomCrop turns into crop positions (recipe.pick_crop: the choice needs the mask)
"""
from __future__ import annotations

import math

import numpy as np

from .config import LoaderConfig

__all__ = ["BRIGHTNESS", "COLOUR", "CONTRAST", "CORNERS", "CROP_TRIES", "DRAWS", "HFLIP", "HUE", "RATIO",
           "SATURATION", "VFLIP", "WINDOW", "crop_box", "crop_window", "draw_crop", "flips", "photometric_draws", "roi",
           "sample_draws"]
HFLIP, VFLIP = 0, 1
WINDOW = slice(2, 6)  # crop
RATIO, COLOUR = 2, slice(3, 7)  # mmseg
CROP_TRIES = 10  # MMSegmentation's RandomCrop: a crop one class fills is drawn again up to 10 times, the last kept
DRAWS = CROP_TRIES + 1  # crop positions drawn per sample: the first and up to 10 more
CORNERS = slice(7, 7 + 2 * DRAWS)  # mmseg
BRIGHTNESS, CONTRAST, SATURATION, HUE = 32.0, (0.5, 1.5), (0.5, 1.5), 18  # PhotoMetricDistortion's defaults


def sample_draws(config: LoaderConfig, epoch: int, sample: int) -> np.ndarray | None:
    """Sample `sample` (its number in the split) of `epoch`: its parameters under the config's augmentation, or
    None where that draws nothing (none, and scoring)."""
    recipe = RECIPES.get(config.augment) if not config.original_labels else None
    return None if recipe is None else recipe(np.random.default_rng((config.seed, epoch, sample)), config)


def _flip(rng: np.random.Generator, config: LoaderConfig) -> np.ndarray:
    return np.array(_coins(rng, config), np.float32)


def _crop(rng: np.random.Generator, config: LoaderConfig) -> np.ndarray:
    window = crop_window(rng, config.scale)
    return np.array([*_coins(rng, config), *window], np.float32)


def _mmseg(rng: np.random.Generator, config: LoaderConfig) -> np.ndarray:
    draws = np.empty(CORNERS.stop, np.float32)
    draws[RATIO] = rng.uniform(*config.ratio_range)
    draws[HFLIP], draws[VFLIP] = _coins(rng, config)
    draws[COLOUR] = photometric_draws(rng)
    draws[CORNERS] = rng.uniform(size=2 * DRAWS)
    return draws


RECIPES = {"flip": _flip, "crop": _crop, "mmseg": _mmseg}


def _coins(rng: np.random.Generator, config: LoaderConfig) -> tuple[float, float]:
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
    """The crop recipe's window as a box (x0, y0, x1, y1) in the pixels of a width × height image, as Pillow's
    resize takes it (unflipped: the flips come after)."""
    top, left, bottom, right = (float(v) for v in draws[WINDOW])
    return left * width, top * height, right * width, bottom * height


def flips(draws: np.ndarray) -> tuple[bool, bool]:
    """(horizontal, vertical): whether the sample is mirrored along each axis."""
    return bool(draws[HFLIP]), bool(draws[VFLIP])


def roi(draws: np.ndarray) -> np.ndarray:
    """The crop recipe's window as DALI's resize reads it, (start row, start column, end row, end column) as
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
