"""The data contract: sample member names, the DALI index format, and the manifest.

A shard set is a folder of `{split}-{NNNNNN}.tar` files, an index file beside each, and `manifest.json`.
The manifest is written last, so a folder without one is an unfinished run and every reader refuses it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import FastsegError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.html"  # the set's report (shards/report.py), beside the manifest
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")

# Member names are KEY.EXT; DALI and webdataset split a name at its first dot, so KEY never has one.
IMAGE_EXTS = ("image.jpg", "image.png")
JPEG_IMAGE_EXT, PNG_IMAGE_EXT = IMAGE_EXTS
MASK_EXT = "mask.png"
META_EXT = "json"
# --store raw: pixels as they are, no decode: H×W×3 uint8 images, H×W uint8 masks, and their (rows, columns) as two
# little-endian int32 (what DALI's reader types with `dtypes` and reshapes by, and numpy views)
RAW_IMAGE_EXT, RAW_MASK_EXT, RAW_SIZE_EXT = "image.rgb", "mask.u8", "size.i32"
RAW_SIZE_DTYPE = "<i4"
GREY = "one-channel"  # storage["grey"]: some raw images are grey, stored as one channel (a third of the bytes)


@dataclass(frozen=True)
class SampleMembers:
    """The members one sample of a set holds, by the manifest's `storage`: an image (one of `images`), a mask, and a
    size when either is raw."""

    images: tuple[str, ...]
    mask: str
    size: str | None
    grey: bool = False  # raw images may be one channel (grey), which readers widen to three

    @property
    def raw_image(self) -> bool:
        return self.images == (RAW_IMAGE_EXT,)

    @property
    def raw_mask(self) -> bool:
        return self.mask == RAW_MASK_EXT

    def image_in(self, members) -> str | None:
        """Which of `images` a sample's members (names) hold."""
        return next((ext for ext in self.images if ext in members), None)


def sample_members(storage: dict[str, str]) -> SampleMembers:
    """The members of a set stored as `storage` ({"image": "source" | "fast-png" | "raw", "mask": "fast-png" | "raw",
    and "grey": "one-channel" where raw grey images are stored as one channel}, Manifest.storage): every reader and
    the writer take member names from here."""
    raw_image, raw_mask = storage.get("image") == "raw", storage.get("mask") == "raw"
    return SampleMembers((RAW_IMAGE_EXT,) if raw_image else IMAGE_EXTS, RAW_MASK_EXT if raw_mask else MASK_EXT,
                         RAW_SIZE_EXT if raw_image or raw_mask else None, raw_image and storage.get("grey") == GREY)
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(name: str) -> str:
    """A shard key from a relative source path: no dots, no slashes, nothing a shell or tar would mangle."""
    return _KEY_UNSAFE.sub("_", name).strip("_") or "sample"


def shard_name(split: str, number: int, part: tuple[int, int] | None = None) -> str:
    """`train-000003.tar`; a part's own shards carry its number (`train-p00002-000003.tar`), so that no two parts
    of a set written on many machines ever write the same name."""
    return f"{split}-{'' if part is None else f'p{part[0]:05d}-'}{number:06d}.tar"


def part_record_name(index: int, count: int) -> str:
    """What part `index` of `count` writes last: its shards and statistics, for the merge."""
    return f"part-{index:05d}-of-{count:05d}.json"


PART_RECORD = re.compile(r"^part-(\d{5})-of-(\d{5})\.json$")
PART_SHARD = re.compile(rf"^({'|'.join(SPLITS)})-p(\d{{5}})-\d{{6}}\.(tar|idx)$")


def index_name(tar_name: str) -> str:
    return tar_name[: -len(".tar")] + ".idx"


_SET_FILE = re.compile(rf"^(({'|'.join(SPLITS)})-(p\d{{5}}-)?\d{{6}}\.(tar|idx)|part-\d{{5}}-of-\d{{5}}\.json)$")


def listing(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_replaceable(where: str, names: list[str]) -> None:
    """Refuse to replace a folder or prefix unless it is empty or holds a shard set and nothing else: `names` are
    its entries (folders with a trailing '/'). --overwrite must never delete a file fastseg did not write."""
    foreign = sorted(n for n in names if n not in (MANIFEST, REPORT) and not _SET_FILE.match(n))
    if names and MANIFEST not in names:
        raise FastsegError(f"{where} is not a fastseg shard set (no {MANIFEST}) and holds {listing(sorted(names))}; "
                           "not overwriting it: choose another OUT, or empty it yourself")
    if foreign:
        raise FastsegError(f"{where} holds a shard set and also {listing(foreign)}, which fastseg did not write; "
                           "not overwriting it: move those away, or choose another OUT")


# --- DALI index files -------------------------------------------------------------------------------
# The format DALI's `wds2idx` writes: a header "v1.2 SAMPLES", then one line per sample holding, for each
# member, "EXT OFFSET SIZE NAME" (OFFSET is where the member's data starts in the tar).
INDEX_VERSION = "v1.2"


def format_index(samples: list[list[tuple[str, int, int, str]]]) -> str:
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in members) for members in samples]
    return "\n".join(lines) + "\n"


def parse_index(text: str, where: str) -> list[list[tuple[str, int, int, str]]]:
    header, *rows = text.splitlines()
    version, _, count = header.partition(" ")
    if version != INDEX_VERSION or not count.isdigit() or int(count) != len(rows):
        raise FastsegError(f"{where}: not a {INDEX_VERSION} DALI index with a matching sample count")
    samples = []
    for row in rows:
        parts = row.split(" ")
        samples.append([(parts[i], int(parts[i + 1]), int(parts[i + 2]), parts[i + 3]) for i in range(0, len(parts), 4)])
    return samples


# --- The manifest -----------------------------------------------------------------------------------
@dataclass
class ShardInfo:
    name: str
    samples: int
    bytes: int
    sha256: str
    index: str
    index_sha256: str | None = None  # sets written before indexes were hashed lack it: their index is not checked


@dataclass
class SplitInfo:
    samples: int
    shards: list[ShardInfo]


@dataclass
class ClassInfo:
    id: int
    name: str
    color: list[int]


@dataclass
class Manifest:
    classes: list[ClassInfo]
    mean: list[float]
    std: list[float]
    splits: dict[str, SplitInfo]
    class_pixels: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, list[list[int]]] = field(default_factory=dict)  # split -> distinct [width, height]
    # how each member kind is stored (sample_members): images "source" bytes, "fast-png" (unfiltered rows) or "raw"
    # (pixels, RAW_*_EXT); masks "fast-png" or "raw". Sets written before this field kept image bytes as they came
    # and wrote masks the fast way (the default)
    storage: dict[str, str] = field(default_factory=lambda: {"image": "source", "mask": "fast-png"})
    ignore_index: int = IGNORE_INDEX
    format_version: int = FORMAT_VERSION
    # what the report shows without reading a sample: per split the pixels of each class and the masks holding it
    # (class_pixels, class_images: {split: {class: count}}), the images per split, and the checks' warnings (lines).
    # Sets written before it have none: fastseg-report then counts a bounded sample of masks
    statistics: dict = field(default_factory=dict)
    # the layout fastseg-shard found the source in ("Pascal VOC 2012", "COCO annotations (…)", "SRC/images +
    # SRC/masks", …); None for sets written before it was recorded
    layout: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise FastsegError(f"no split {name!r} in this shard set; it has: {', '.join(self.splits)}")
        return self.splits[name]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: dict) -> Manifest:
        splits = {
            name: SplitInfo(s["samples"], [ShardInfo(**shard) for shard in s["shards"]])
            for name, s in raw["splits"].items()
        }
        classes = [ClassInfo(**c) for c in raw["classes"]]
        fields = {k: raw[k] for k in ("mean", "std", "class_pixels", "sizes", "storage", "ignore_index",
                                      "format_version", "statistics", "layout") if k in raw}
        return cls(classes=classes, splits=splits, **fields)


def parse_manifest(text: str, where: str) -> Manifest:
    """A manifest's text (read from `where`, named in errors) at this fastseg's format version."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise FastsegError(f"{where}: unreadable manifest ({err}); shard the data again") from err
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise FastsegError(
            f"{where}: format version {version!r}, this fastseg reads version {FORMAT_VERSION}; "
            "re-shard with this fastseg version"
        )
    try:
        return Manifest.from_dict(raw)
    except (KeyError, TypeError) as err:
        raise FastsegError(f"{where}: manifest is missing a field ({err}); shard the data again") from err


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def raw_pixels(data: bytes, size: bytes, channels: int):
    """A raw member as the numpy array it holds (H×W×3 for images, H×W×1 for a grey image stored as one channel,
    H×W for masks: `channels` 3 or 1), checked against its size member: a FastsegError names what is wrong."""
    import numpy as np

    rows, cols = (int(v) for v in np.frombuffer(size, RAW_SIZE_DTYPE))
    stored = 1 if channels == 3 and len(data) == rows * cols else channels
    expected = rows * cols * stored
    if len(data) != expected:
        raise FastsegError(f"a raw member of {len(data)} bytes, where {rows}x{cols}x{channels} needs "
                           f"{rows * cols * channels}")
    pixels = np.frombuffer(data, np.uint8)
    return pixels.reshape((rows, cols, stored) if channels > 1 else (rows, cols))
