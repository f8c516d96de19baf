"""What a picture looks like, in 64 bits each: an exact hash of its pixels (the same picture stored under another
name or in another format has the same one) and a perceptual hash (dHash: the brightness gradient of a 9×8
thumbnail), which a re-encoded, slightly resized or recoloured copy changes in a few bits only. The shard workers
compute both for every image; checks.py compares them across the splits."""
from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

# Two pictures whose perceptual hashes differ in at most this many of 64 bits count as near duplicates: a JPEG
# re-encode or a rescale moves 0-3 bits, unrelated photos differ in about 32, consecutive video frames in 2-12.
NEAR_BITS = 4


def pixel_hash(rgb: bytes, size: tuple[int, int]) -> int:
    """64 bits of SHA-256 (hardware-assisted on current x86 and ARM) over the size and the RGB pixels."""
    digest = hashlib.sha256(np.array(size, np.int64).tobytes())
    digest.update(rgb)
    return int.from_bytes(digest.digest()[:8], "little")


def perceptual_hash(image: Image.Image) -> int:
    """dHash: the picture in grey at 9×8, one bit per horizontal neighbour pair (is the left one brighter?)."""
    small = image.convert("L")
    small.draft("L", (64, 64))  # a JPEG decoded at a reduced scale already: no effect otherwise
    thumb = np.asarray(small.resize((9, 8), Image.BILINEAR, reducing_gap=2.0), np.int16)
    bits = (thumb[:, :-1] > thumb[:, 1:]).ravel()
    return int(np.packbits(bits, bitorder="little").view("<u8")[0])


def near_pairs(left: np.ndarray, right: np.ndarray, bits: int = NEAR_BITS, chunk: int = 2048) -> list[tuple[int, int]]:
    """(i, j) of every left[i], right[j] (uint64 perceptual hashes) at most `bits` apart, in chunks so that the
    comparison of every pair stays within memory."""
    found = []
    for start in range(0, len(left), chunk):
        block = left[start:start + chunk, None] ^ right[None, :]
        rows, cols = np.nonzero(np.bitwise_count(block) <= bits)
        found += [(start + int(r), int(c)) for r, c in zip(rows, cols)]
    return found
