"""One image/mask pair → the members of one sample, checked, plus the statistics the manifest needs.

Images: JPEG bytes are kept as they are (L or RGB, upright); lossless images are kept, re-encoded as PNG or stored
as pixels, as the set's storage says (STORES); anything else is stored upright as lossless PNG. Masks: converted to
class indices (masks.py) and stored as an 8-bit PNG of unfiltered rows, or as pixels. Runs in the shard workers;
every problem is a FastsegError naming the file.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ..errors import FastsegError
from ..format import JPEG_IMAGE_EXT, META_EXT, PNG_IMAGE_EXT, RAW_IMAGE_EXT, RAW_SIZE_DTYPE, sample_members
from . import masks as maskmod
from .looks import perceptual_hash, pixel_hash
from .pairs import Pair

EXIF_ORIENTATION = 0x0112
STORED_AS_IS = {("JPEG", "RGB"): JPEG_IMAGE_EXT, ("JPEG", "L"): JPEG_IMAGE_EXT, ("PNG", "RGB"): PNG_IMAGE_EXT,
                ("PNG", "L"): PNG_IMAGE_EXT}


@dataclass
class Encoded:
    """One checked sample, ready for the tar, plus the statistics the manifest needs."""

    key: str
    members: dict[str, bytes]
    size: tuple[int, int]
    pixel_hist: np.ndarray  # 3×256 histogram of image values, for mean/std without holding images
    class_hist: np.ndarray  # 256 bins of stored mask values
    pixel_hash: int = 0  # 64 bits of a hash of the image's RGB pixels: the same picture whatever its file or format
    look: int = 0  # a 64-bit perceptual hash (looks.py): near-identical pictures differ in a few bits
    grey: bool = False  # a raw image stored as one channel


# How images and masks are stored (--store; the manifest's `storage`, format.sample_members). JPEG images are never
# re-encoded. "source" keeps a PNG's bytes as they are; "fast-png" re-encodes every non-JPEG image as a PNG of
# unfiltered rows at zlib level 3, which both loaders inflate faster, without undoing row filters, for a little more
# disk. Masks are stored the fast way (zlib level 1: label maps compress well) unless raw. "raw" stores images and
# masks as their pixels (format.RAW_*_EXT), which no loader decodes; for sets of lossless images only (a JPEG would
# grow tenfold). "auto", the default: JPEG sets as "source"; sets with no JPEG file, raw images and fast-png masks
# (raw masks would cost a third more disk for little speed). docs/performance.md has the measured figures.
STORES = ("auto", "source", "fast-png", "raw")
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def storage_for(store: str, splits: dict[str, list[Pair]]) -> dict[str, str]:
    """The manifest's `storage` for --store STORE over a set's pairs: "auto" decides by the image files' names, the
    same on every machine that writes a part of the set."""
    if store == "auto":
        jpeg = any(str(p.image).lower().endswith(JPEG_SUFFIXES) for pairs in splits.values() for p in pairs)
        return {"image": "source", "mask": "fast-png"} if jpeg else {"image": "raw", "mask": "fast-png"}
    if store not in STORES:
        raise FastsegError(f"unknown storage {store!r}; use one of {', '.join(STORES)}")
    return {"image": store, "mask": "raw" if store == "raw" else "fast-png"}


def encode_png(image: Image.Image, level: int = 3) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=level)
    return out.getvalue()


def encode_fast_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """An 8-bit PNG (H×W grayscale or H×W×3 RGB) whose rows are unfiltered, then zlib at `level`. Pillow tries all
    five PNG row filters on every row (adaptive filtering), which on label maps takes twice as long as this (~2 ms
    against ~1 ms a 854x480 mask) for a slightly larger file, and a decoder then undoes the filter on every row."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.zeros((height, width * channels + 1), np.uint8)  # each row starts with its filter type: 0, none
    rows[:, 1:] = pixels.reshape(height, width * channels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour = {1: 0, 3: 2}[channels]  # PNG colour types: grayscale, truecolour
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)  # 8 bits, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + chunk(b"IEND", b""))


def encode_mask_png(indices: np.ndarray) -> bytes:
    """A class-index mask as an 8-bit grayscale PNG, the fast way (encode_fast_png, zlib level 1)."""
    return encode_fast_png(indices, level=1)


def load_image(data: bytes, where: str, store: str = "source") -> tuple[Image.Image, str, bytes]:
    """Decode fully (catching truncation), set upright, and decide what the shard stores. JPEG in L or RGB, already
    upright, keeps its bytes; so does such a PNG with store "source"; anything else is stored as lossless PNG
    (with store "fast-png": unfiltered rows, see STORES)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:  # Pillow raises several types for corrupt files
        raise FastsegError(f"{where}: cannot decode the image ({err}); replace or remove the file") from err
    check_single_frame(image, where)
    if image.mode in WIDE_MODES:
        raise FastsegError(f"{where}: a {WIDE_MODES[image.mode]} image; fastseg stores 8-bit images: convert it to "
                           "8 bits per channel (scaled to 0..255 as you see fit) and shard again")
    upright = image.getexif().get(EXIF_ORIENTATION, 1) == 1
    ext = STORED_AS_IS.get((image.format, image.mode))
    if ext and upright and (ext == JPEG_IMAGE_EXT or store == "source"):
        return image, ext, data
    image = ImageOps.exif_transpose(image)
    image = image.convert("L" if image.mode in ("L", "LA") else "RGB")
    if store == "fast-png":
        return image, PNG_IMAGE_EXT, encode_fast_png(np.asarray(image), level=3)
    return image, PNG_IMAGE_EXT, encode_png(image)


WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}


def check_single_frame(image: Image.Image, where: str) -> None:
    """An animated GIF or a multi-page TIFF holds several pictures; which one pairs with the other file is unknown."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise FastsegError(f"{where}: {frames} frames (an animated GIF or a multi-page TIFF); fastseg reads one "
                           "picture per file: keep the one that pairs with its partner, and shard again")


def encode_sample(pair: Pair, spec: maskmod.MaskSpec, resize_masks: bool, storage: dict[str, str]) -> Encoded:
    """One pair's members, stored as `storage` (storage_for)."""
    names = sample_members(storage)
    image, image_ext, image_bytes = load_image(pair.image.read_bytes(), str(pair.image),
                                               "source" if names.raw_image else storage["image"])
    if names.raw_image and image_ext == JPEG_IMAGE_EXT:
        if str(pair.image).lower().endswith(JPEG_SUFFIXES):
            raise FastsegError(f"{pair.image}: a JPEG; --store raw keeps lossless images as their pixels, and a JPEG "
                               "stored so would take ten times its bytes: shard this set with --store auto (JPEGs "
                               "kept as they are) or source")
        raise FastsegError(f"{pair.image}: JPEG data in a file not named .jpg, so --store auto chose raw pixels for "
                           "this set's images, where a JPEG would take ten times its bytes: rename the file .jpg "
                           "(auto then keeps every image's bytes), or shard with --store source")
    try:
        mask = Image.open(pair.mask)
        mask.load()
    except Exception as err:
        raise FastsegError(f"{pair.mask}: cannot decode the mask ({err}); replace or remove the file") from err
    check_single_frame(mask, str(pair.mask))
    if mask.size != image.size:
        if not resize_masks:
            raise SizeMismatch(f"{pair.image} is {image.size[0]}x{image.size[1]} but {pair.mask} is "
                               f"{mask.size[0]}x{mask.size[1]}")
        mask = mask.resize(image.size, Image.NEAREST)
    indices, stored = spec.convert(mask, str(pair.mask))
    # every pixel counted, in C; a grayscale image counts as its value in all three channels
    hist = np.array(image.histogram(), np.int64).reshape(-1, 256)
    hist = np.repeat(hist, 3, axis=0) if image.mode == "L" else hist[:3]
    meta = {"key": pair.key, "image": str(pair.image), "mask": str(pair.mask), "width": image.size[0],
            "height": image.size[1]}
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = rgb.tobytes()  # once: the raw member (when raw) and the pixel hash read the same bytes
    grey = names.raw_image and image.mode == "L"  # one channel, widened by the loaders: a third of the bytes
    members = {RAW_IMAGE_EXT: image.tobytes() if grey else pixels} if names.raw_image else {image_ext: image_bytes}
    members[names.mask] = indices.tobytes() if names.raw_mask else encode_mask_png(indices)
    if names.size:
        members[names.size] = np.array([image.size[1], image.size[0]], RAW_SIZE_DTYPE).tobytes()
    members[META_EXT] = json.dumps(meta).encode()
    return Encoded(pair.key, members, image.size, hist, stored, pixel_hash(pixels, image.size), perceptual_hash(image),
                   grey)


class SizeMismatch(FastsegError):
    """A mask whose size differs from its image (a plain message, so it crosses process boundaries)."""


def encode_job(job):
    """Worker entry: an Encoded sample, or the FastsegError that names what is wrong with it."""
    pair, spec, resize_masks, storage = job
    try:
        return encode_sample(pair, spec, resize_masks, storage)
    except FastsegError as err:
        return err
