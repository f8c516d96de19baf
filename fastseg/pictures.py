"""A member's pixels (a raw view, or a decode: what both loaders and the set's report read), and the pictures people
look at: class-coloured masks, overlays and palette PNGs (the set's report, shards/report.py, and a run's outputs,
training/visualize.py). Nothing here imports torch."""
from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

from .format import IGNORE_INDEX, raw_pixels

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


def member_pixels(data: bytes, size: bytes | None, channels: int) -> np.ndarray:
    """A member's pixels: a raw one (`size`: its sample's size member) viewed and copied, for torch takes writable
    arrays, never decoded; an encoded one decoded (an image to RGB)."""
    if size:
        pixels = raw_pixels(data, size, channels)
        return np.repeat(pixels, 3, axis=2) if channels == 3 and pixels.shape[2] == 1 else np.array(pixels)
    return decode_image(data) if channels == 3 else np.array(Image.open(io.BytesIO(data)))


def decode_image(data: bytes) -> np.ndarray:
    """An H×W×3 uint8 RGB array. JPEG goes through simplejpeg: libjpeg-turbo (as in Pillow) decoding straight into
    the array, where Pillow decodes to 4 bytes a pixel and then copies out (a third slower here). Other formats, and
    JPEGs that libjpeg-turbo will not turn into RGB (CMYK), go through Pillow; a corrupt JPEG fails in both."""
    if simplejpeg.is_jpeg(data):
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass
    image = Image.open(io.BytesIO(data))
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))
