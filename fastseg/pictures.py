"""A member's pixels (a raw view, or a decode: what both loaders and the set's report read), and the pictures people
look at: class-coloured masks, overlays and palette PNGs (the set's report, shards/report.py, and a run's outputs,
training/visualize.py). Nothing here imports torch."""
from __future__ import annotations

import io
import threading

import numpy as np
import simplejpeg
from PIL import Image

from .format import IGNORE_INDEX, RAW_SIZE_DTYPE, raw_pixels

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


def image_region(data: bytes, size: bytes | None, box) -> np.ndarray:
    """Rows box.top..box.bottom and columns box.left..box.right of a member's image (H×W×3 uint8) at 1/box.factor of
    its size (loading/windows.py), decoding as little as the format allows: a raw image is viewed and only the box
    copied; a JPEG at full scale is decoded in the box alone where the box is under REGION_SHARE of the frame
    (nvImageCodec over libjpeg-turbo: rows below the box are never decoded, rows above only entropy-decoded,
    columns outside skipped where the format allows; for larger boxes its per-call cost eats the saving, so the
    whole frame is decoded and cut), at a reduced scale whole with libjpeg-turbo's DCT scaling (simplejpeg); other
    formats are decoded whole and cut.
    A JPEG that either decoder refuses goes through decode_image, which fails for a corrupt one."""
    rows, cols = slice(box.top, box.bottom), slice(box.left, box.right)
    if size:
        pixels = raw_pixels(data, size, 3)[rows, cols]
        return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else np.array(pixels)
    if simplejpeg.is_jpeg(data):
        if box.factor > 1:  # the scale whose sides are at least 1/factor of the image's: exactly that factor
            try:
                height, width = simplejpeg.decode_jpeg_header(data)[:2]
                return simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=box.factor,
                                              min_height=-(-height // box.factor),
                                              min_width=-(-width // box.factor))[rows, cols]
            except ValueError:
                pass
        elif _region_pays(data, box):
            decoded = _jpeg_region(data, box)
            if decoded is not None:
                return decoded
    return decode_image(data)[rows, cols] if box.factor == 1 else _reduced(decode_image(data), box)


def _reduced(image: np.ndarray, box) -> np.ndarray:
    """A whole decoded image brought to 1/box.factor by area averaging (what DCT scaling approximates), then cut:
    for the rare JPEG that libjpeg-turbo will not scale (CMYK)."""
    import cv2

    factor = box.factor
    shape = (-(-image.shape[1] // factor), -(-image.shape[0] // factor))
    return cv2.resize(image, shape, interpolation=cv2.INTER_AREA)[box.top:box.bottom, box.left:box.right]


REGION_SHARE = 0.6  # region decoding pays below this share of the frame's area (DAVIS JPEGs, one thread: the
# whole frame 1.78 ms with simplejpeg; a centred region of 75% 1.85 ms, 50% 1.50 ms, 25% 1.07 ms with nvImageCodec)


def _region_pays(data: bytes, box) -> bool:
    try:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
    except ValueError:
        return True  # the region decoder may still read it; if not, decode_image names the failure
    return (box.bottom - box.top) * (box.right - box.left) < REGION_SHARE * height * width


_decoders = threading.local()  # an nvImageCodec decoder is not shared between threads: one per thread


def _jpeg_region(data: bytes, box) -> np.ndarray | None:
    """The box of a JPEG at full scale, decoded by nvImageCodec's CPU (libjpeg-turbo) decoder; None where it is not
    installed or does not decode this file."""
    try:
        from nvidia import nvimgcodec
    except ImportError:  # pragma: no cover - it comes with DALI
        return None
    if not hasattr(_decoders, "decoder"):
        _decoders.decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=1,
                                               backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])
        _decoders.params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB,
                                                   sample_format=nvimgcodec.SampleFormat.I_RGB)
    try:
        stream = nvimgcodec.CodeStream(data).get_sub_code_stream(
            region=nvimgcodec.Region(box.top, box.left, box.bottom, box.right))
        decoded = _decoders.decoder.decode(stream, params=_decoders.params)
    except Exception:  # its errors are C++ runtime errors of several kinds: the caller falls back
        return None
    return None if decoded is None else np.asarray(decoded.cpu())


def image_shape(data: bytes, size: bytes | None) -> tuple[int, int]:
    """(rows, columns) of a member's image from its header (or its raw size member), without decoding it."""
    if size:
        return tuple(int(v) for v in np.frombuffer(size, RAW_SIZE_DTYPE))
    if simplejpeg.is_jpeg(data):
        try:
            return simplejpeg.decode_jpeg_header(data)[:2]
        except ValueError:
            pass
    width, height = Image.open(io.BytesIO(data)).size
    return height, width


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
