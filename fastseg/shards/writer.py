"""Image/mask folders → verified WebDataset shards: find_pairs → encode (in workers) → write → index → manifest.

Everything is written into a hidden sibling folder and moved into place only when complete, manifest last, so an
interrupted run never leaves output that looks finished.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import signal
import struct
import tarfile
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from .. import storage
from ..errors import FastsegError
from ..format import (
    MANIFEST,
    Manifest,
    ShardInfo,
    SplitInfo,
    check_replaceable,
    format_index,
    index_name,
    sha256_file,
    shard_name,
)
from ..processes import workers_starting
from ..storage import old_path, partial_path, sweep_stale
from . import masks as maskmod
from .datasets import KNOWN_LAYOUTS, recognise
from .pairs import Pair, compile_pair_key, find_pairs, split_off_val

EXIF_ORIENTATION = 0x0112
STORED_AS_IS = {("JPEG", "RGB"): "image.jpg", ("JPEG", "L"): "image.jpg", ("PNG", "RGB"): "image.png",
                ("PNG", "L"): "image.png"}


@dataclass
class ShardOptions:
    images: Path | None = None
    masks: Path | None = None
    classes: Path | None = None
    ignore_value: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    shard_size: int = 256 * 1024**2
    max_count: int | None = None
    resize_masks: bool = False
    skip_unpaired: bool = False
    overwrite: bool = False
    keep_zero_label: bool = False  # ADE20K: keep value 0 ("other") as a class instead of ignoring it
    mask_threshold: int | None = None  # binary masks by brightness (JPEG or anti-aliased masks)
    pair_key: str | None = None  # a regex whose first group pairs image and mask stems
    map_values: dict[int, int] | None = None  # source mask value → class id (255 = ignore)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True


@dataclass
class Encoded:
    """One checked sample, ready for the tar, plus the statistics the manifest needs."""

    key: str
    members: dict[str, bytes]
    size: tuple[int, int]
    pixel_hist: np.ndarray  # 3×256 histogram of image values, for mean/std without holding images
    class_hist: np.ndarray  # 256 bins of stored mask values


def _encode_png(image: Image.Image, level: int = 3) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=level)
    return out.getvalue()


def encode_mask_png(indices: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a class-index mask: each row unfiltered, then zlib level 1. Pillow tries all five
    PNG row filters on every row (adaptive filtering), which on label maps takes twice as long as this (~2 ms
    against ~1 ms a 854x480 mask) for a slightly larger file."""
    height, width = indices.shape
    rows = np.zeros((height, width + 1), np.uint8)  # each row starts with its filter type: 0, none
    rows[:, 1:] = indices

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, grayscale, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
            + chunk(b"IEND", b""))


def load_image(data: bytes, where: str) -> tuple[Image.Image, str, bytes]:
    """Decode fully (catching truncation), set upright, and decide what the shard stores.
    JPEG/PNG in L or RGB, already upright, keep their bytes; anything else is stored as lossless PNG."""
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
    if ext and upright:
        return image, ext, data
    image = ImageOps.exif_transpose(image)
    image = image.convert("L" if image.mode in ("L", "LA") else "RGB")
    return image, "image.png", _encode_png(image)


WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}


def check_single_frame(image: Image.Image, where: str) -> None:
    """An animated GIF or a multi-page TIFF holds several pictures; which one pairs with the other file is unknown."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise FastsegError(f"{where}: {frames} frames (an animated GIF or a multi-page TIFF); fastseg reads one "
                           "picture per file: keep the one that pairs with its partner, and shard again")


def encode_sample(pair: Pair, spec: maskmod.MaskSpec, resize_masks: bool) -> Encoded:
    image, image_ext, image_bytes = load_image(pair.image.read_bytes(), str(pair.image))
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
    members = {image_ext: image_bytes, "mask.png": encode_mask_png(indices), "json": json.dumps(meta).encode()}
    return Encoded(pair.key, members, image.size, hist, stored)


class SizeMismatch(FastsegError):
    """A mask whose size differs from its image (a plain message, so it crosses process boundaries)."""


def _encode_job(job):
    """Worker entry: an Encoded sample, or the FastsegError that names what is wrong with it."""
    pair, spec, resize_masks = job
    try:
        return encode_sample(pair, spec, resize_masks)
    except FastsegError as err:
        return err


def plan_shards(pairs: list[Pair], shard_size: int, max_count: int | None) -> list[list[Pair]]:
    """Nearly equal shards: as few as the byte and count limits allow, with samples spread evenly."""
    total = sum(p.image.stat().st_size + p.mask.stat().st_size for p in pairs)
    count = max(1, math.ceil(total / shard_size), math.ceil(len(pairs) / max_count) if max_count else 1)
    count = min(count, len(pairs))
    return [pairs[len(pairs) * i // count : len(pairs) * (i + 1) // count] for i in range(count)]


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_index(tar_path: Path) -> int:
    """Write the DALI index beside a finished shard, reading the tar back (which also checks it); returns samples."""
    samples, last_key = [], None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key != last_key:
                samples.append([])
                last_key = key
            samples[-1].append((ext, member.offset_data, member.size, member.name))
    (tar_path.parent / index_name(tar_path.name)).write_text(format_index(samples))
    return len(samples)


class Stats:
    """Running totals over the training images and all masks; nothing per sample is kept."""

    def __init__(self):
        self.pixel_hist = np.zeros((3, 256), np.int64)
        self.class_hist = {}
        self.sizes = defaultdict(set)

    def add(self, split: str, sample: Encoded) -> None:
        if split == "train":
            self.pixel_hist += sample.pixel_hist
        self.class_hist.setdefault(split, np.zeros(256, np.int64))
        self.class_hist[split] += sample.class_hist
        self.sizes[split].add(sample.size)

    def mean_std(self) -> tuple[list[float], list[float]]:
        if not self.pixel_hist.any():  # no training split: no statistics to take
            return [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]
        values = np.arange(256, dtype=np.float64)
        count = self.pixel_hist.sum(axis=1)
        mean = (self.pixel_hist * values).sum(axis=1) / count
        var = (self.pixel_hist * values**2).sum(axis=1) / count - mean**2
        return [round(float(m), 4) for m in mean], [round(float(max(s, 1e-6)), 4) for s in np.sqrt(var)]


def _prepare_out(out: Path, overwrite: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    for line in sweep_stale(out):  # first: it may move a set back into place, which the checks below then see
        print(line)
    if out.exists():
        if not overwrite:
            raise FastsegError(f"{out} already exists; pass --overwrite to replace it, or choose another folder")
        if not out.is_dir():
            raise FastsegError(f"{out} is a file, not a shard set; not overwriting it: choose another OUT")
        check_replaceable(str(out), [p.name + ("/" if p.is_dir() else "") for p in out.iterdir()])
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _commit(tmp: Path, out: Path) -> None:
    """Move the finished set into place. Replacing takes two renames; a kill between them leaves OUT missing and
    the old set at its `.old` path, which the next run's sweep moves back (partial.sweep_stale)."""
    if out.exists():
        old = old_path(out)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def _term_as_exit(*_):
    raise SystemExit(143)


def shard(src: Path, out, opts: ShardOptions, *, shown_as: str | None = None) -> Manifest:
    """Shard SRC into OUT: a folder, or an s3:// prefix (written locally first, then uploaded, manifest last).
    `shown_as` names the destination in the summary line when OUT is only a staging folder."""
    if storage.is_remote(out):
        return _shard_to_bucket(src, str(out).rstrip("/"), opts)
    start = time.perf_counter()
    splits, spec = _pairs_and_spec(src, opts)
    everything = [p for pairs in splits.values() for p in pairs]

    tmp = _prepare_out(out, opts.overwrite)
    previous = signal.signal(signal.SIGTERM, _term_as_exit)
    try:
        # workers take SIGTERM's default (die): a forked one would inherit _term_as_exit, and the pool's own
        # terminate() could then leave one waiting forever on a queue lock that a killed sibling held
        with workers_starting() as context, context.Pool(max(1, opts.workers), signal.signal,
                                                         (signal.SIGTERM, signal.SIG_DFL)) as pool:
            if spec.kind == "rgb" and not spec.fixed:
                spec.colors = maskmod.discover_colors(pool.imap_unordered(maskmod.colors_in, [p.mask for p in everything], 8))
                spec.names = [f"class_{i}" for i in range(len(spec.colors))]
            manifest = _write_splits(pool, splits, spec, tmp, opts)
        (tmp / MANIFEST).write_text(manifest.to_json())
        _commit(tmp, out)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(tmp, ignore_errors=True)
    _summary(manifest, shown_as or out, time.perf_counter() - start)
    return manifest


def _pairs_and_spec(src: Path, opts: ShardOptions) -> tuple[dict[str, list[Pair]], maskmod.MaskSpec]:
    """The pairs per split and how their masks become class ids: a public dataset's own (datasets.py), or the
    generic layouts' (pairs.py) with the mask kind detected from a spread of masks."""
    known = None if opts.images or opts.masks or opts.pair_key else recognise(src, opts.keep_zero_label)
    if known is not None:
        own = [flag for flag, value in (("--classes", opts.classes), ("--ignore-value", opts.ignore_value),
                                        ("--mask-threshold", opts.mask_threshold), ("--map-values", opts.map_values))
               if value is not None]
        if own:
            raise FastsegError(f"{src} is {known.name}, which brings its own class table: {', '.join(own)} does not "
                               "apply; to use it, shard the folders with --images DIR --masks DIR")
        print(known.describe())
        for split, why in known.skipped.items():
            print(f"skipping the {split} split: {why}")
        return split_off_val(known.splits, opts.val_fraction, opts.seed), known.spec
    pair_key = compile_pair_key(opts.pair_key) if opts.pair_key else None
    found = find_pairs(src, opts.images, opts.masks, pair_key, also_tried=KNOWN_LAYOUTS)
    if found.unpaired:
        listing = ", ".join(str(p) for p in found.unpaired[:5]) + (" …" if len(found.unpaired) > 5 else "")
        if not opts.skip_unpaired:
            raise FastsegError(f"{len(found.unpaired)} file(s) without a partner: {listing}; "
                               "rename them to match, or pass --skip-unpaired")
        print(f"skipping {len(found.unpaired)} unpaired file(s): {listing}")
    splits = split_off_val(found.splits, opts.val_fraction, opts.seed)
    everything = [p for pairs in splits.values() for p in pairs]
    spread = [p.mask for p in everything[:: max(1, len(everything) // 32)]]
    return splits, maskmod.detect_spec(spread, opts.classes, opts.ignore_value, threshold=opts.mask_threshold,
                                       value_map=opts.map_values)


def _shard_to_bucket(src: Path, root: str, opts: ShardOptions) -> Manifest:
    storage.check_bucket(root)
    existing = storage.sizes(root)
    if existing:
        if not opts.overwrite:
            raise FastsegError(f"{root} already holds {len(existing)} object(s); pass --overwrite to replace the set "
                               "there, or choose another prefix")
        check_replaceable(root, sorted(existing))
    with tempfile.TemporaryDirectory(prefix="fastseg-shard-") as tmp:
        manifest = shard(src, Path(tmp) / "set", replace(opts, overwrite=False), shown_as=f"{root} (uploading)")
        upload_set(Path(tmp) / "set", root, existing, opts.progress)
    print(f"uploaded to {root}, manifest last")
    return manifest


def upload_set(folder: Path, root: str, existing: dict[str, int], progress: bool = True) -> None:
    """Upload a finished shard set under an s3:// prefix so that it never looks complete before it is: an old
    manifest goes first, the new one last; objects of the old set that the new one lacks are removed before."""
    if MANIFEST in existing:
        storage.delete(root, [MANIFEST])
    files = sorted(p for p in folder.iterdir() if p.name != MANIFEST)
    for path in tqdm(files, unit="file", desc="uploading", disable=not progress):
        storage.upload(path, storage.join(root, path.name))
    storage.delete(root, sorted(set(existing) - {p.name for p in files} - {MANIFEST}))
    storage.upload(folder / MANIFEST, storage.join(root, MANIFEST))


def _write_splits(pool, splits: dict[str, list[Pair]], spec, tmp: Path, opts: ShardOptions) -> Manifest:
    stats, errors, infos = Stats(), [], {}
    total = sum(len(p) for p in splits.values())
    bar = tqdm(total=total, unit="sample", desc="sharding", disable=not opts.progress)
    for split, pairs in splits.items():
        pairs = list(pairs)
        random.Random(opts.seed).shuffle(pairs)  # mix sources across shards; DALI shuffles only within a buffer
        jobs = [(p, spec, opts.resize_masks) for p in pairs]
        results = pool.imap(_encode_job, jobs, chunksize=4)  # one ordered stream per split: no stall at shard edges
        shards = []
        for number, chunk in enumerate(plan_shards(pairs, opts.shard_size, opts.max_count)):
            path = tmp / shard_name(split, number)
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for result in (next(results) for _ in chunk):
                    bar.update()
                    if isinstance(result, FastsegError):
                        errors.append(result)
                        continue
                    stats.add(split, result)
                    for ext, data in result.members.items():
                        _add_member(tar, f"{result.key}.{ext}", data)
            index = tmp / index_name(path.name)
            shards.append(ShardInfo(path.name, write_index(path), path.stat().st_size, sha256_file(path),
                                    index.name, sha256_file(index)))
        infos[split] = SplitInfo(sum(s.samples for s in shards), shards)
    bar.close()
    if errors:
        _raise_collected(errors)
    present = sum(stats.class_hist.values())
    classes = spec.classes(present)
    mean, std = stats.mean_std()
    train_hist = stats.class_hist.get("train", present)
    return Manifest(
        classes=classes, mean=mean, std=std, splits=infos,
        class_pixels={c.name: int(train_hist[c.id]) for c in classes},
        sizes={s: sorted([list(wh) for wh in sizes]) for s, sizes in stats.sizes.items()},
    )


def _raise_collected(errors: list[FastsegError]) -> None:
    mismatched = [e for e in errors if isinstance(e, SizeMismatch)]
    lines = [str(e) for e in errors[:10]] + ([f"… and {len(errors) - 10} more"] if len(errors) > 10 else [])
    hint = "; pass --resize-masks to resize masks (nearest neighbour)" if mismatched else ""
    raise FastsegError(f"{len(errors)} sample(s) failed the checks, nothing was written{hint}:\n  " + "\n  ".join(lines))


def _summary(manifest: Manifest, out: Path, seconds: float) -> None:
    samples = sum(s.samples for s in manifest.splits.values())
    nbytes = sum(sh.bytes for s in manifest.splits.values() for sh in s.shards)
    per_split = ", ".join(f"{name} {s.samples} in {len(s.shards)} shard(s)" for name, s in manifest.splits.items())
    print(f"wrote {out}: {per_split}; {nbytes / 1e6:.1f} MB; {manifest.num_classes} classes "
          f"({', '.join(c.name for c in manifest.classes[:12])}{' …' if manifest.num_classes > 12 else ''}); "
          f"{seconds:.1f} s, {samples / max(seconds, 1e-9):.1f} samples/s")
