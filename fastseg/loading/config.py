"""LoaderConfig: every loader option once, with its default and its check.

`make_loader`, `SegDataModule`, the plan and both backends read this one frozen object. Adding an option is a
field here, the backends that use it and the docs: declared with settings.option, the field is a flag of
fastseg-train and a key of its settings files, and reaches this class by its name (`mode` names the augmentation
it belongs to). Options left `None` are decided per split when a loader is made (`for_split`): the output size from
the manifest, the augmentation and shuffle by role (training or not), the workers from the machine.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields, replace

from ..errors import FastsegError
from ..format import Manifest
from ..settings import option, parse_size

# what each does: its job's module (job_flip.py: none and flip; job_crop.py; job_mmseg.py; job_rotate.py)
AUGMENTS = ("none", "flip", "crop", "mmseg", "rotate")
BACKENDS = ("dali", "torch")  # NVIDIA DALI, or a torch DataLoader


@dataclass(frozen=True)
class LoaderConfig:
    backend: str = option("dali", flag="--loader", choices=BACKENDS, help="NVIDIA DALI, or a torch DataLoader")
    batch_size: int = option(16, type=int, help="per device")
    size: tuple[int, int] | None = option(None, flag="--image-size", type=int, nargs="+", metavar="N",
                                          help="H W (or one number for square); default: the split's one image size")
    augment: str | None = option(None, choices=AUGMENTS,
                                 help="flip (the default when training): paired flips, no resampling at the native "
                                      "size; crop: random scale-crop, resize and flip; mmseg: MMSegmentation's recipe "
                                      "(random resize, padded crop with cat_max_ratio, flip, photometric distortion); "
                                      "rotate: a random rotation within ±degrees and the flips, the uncovered border "
                                      "ignored; none")  # None: flip when training, none otherwise (True/False: flip/none)
    scale: tuple[float, float] = option((0.5, 1.0), mode="crop", type=float, nargs=2, metavar=("LO", "HI"),
                                        help="crop: the area fraction range")
    base_size: tuple[int, int] | None = option(None, mode="mmseg", type=int, nargs=2, metavar=("H", "W"),
                                               help="mmseg: the scale resized by the ratio (RandomResize scale; "
                                                    "default: the largest image)")
    ratio_range: tuple[float, float] = option((0.5, 2.0), mode="mmseg", type=float, nargs=2, metavar=("LO", "HI"),
                                              help="mmseg: the scale ratio range (ratio_range)")
    cat_max_ratio: float = option(0.75, mode="mmseg", type=float,
                                  help="mmseg: redraw crops one class fills beyond this share (RandomCrop "
                                       "cat_max_ratio; 1: off)")
    photometric: bool = option(True, mode="mmseg", action=argparse.BooleanOptionalAction,
                               help="mmseg: PhotoMetricDistortion of the image")
    degrees: float = option(10.0, mode="rotate", type=float, metavar="D",
                            help="rotate: the largest angle, in degrees either way (RandomRotate degree)")
    window_decode: bool = option(True, action=argparse.BooleanOptionalAction,
                                 help="crop, mmseg: decode only the region of each image its crop keeps, at a reduced "
                                      "scale where the crop shrinks it 2x or more (off: whole images)")
    vflip: bool = option(False, action=argparse.BooleanOptionalAction, help="vertical flips too")
    shuffle: bool | None = None  # a new order every epoch; None: when training
    workers: int | None = option(None, type=int, help="loader threads/processes per device (default: cores / "
                                                      "devices; 0: the torch loader loads in the main process)")
    seed: int = option(0, type=int, help="every draw of every sample, and the training order")
    cache: str | None = option(None, help="a set in an object store: the folder its shards are cached in, shared by "
                                          "the runs of this machine (default $FASTSEG_CACHE, else "
                                          "$XDG_CACHE_HOME/fastseg, else ~/.cache/fastseg); none: no cache, every "
                                          "sample read by a ranged GET")
    cache_limit: str | None = option(None, help="the most the shard cache holds, e.g. 16MiB or 200GiB (default: "
                                                "half the disk's free space)")
    checksums: bool = option(True, action=argparse.BooleanOptionalAction,
                             help="the sha256 of every local shard at start-up")
    return_keys: bool = option(False, flag="--log-batch-keys", action="store_true",
                               help="write OUT/batches/rankR.jsonl: the sample keys of every training step")
    channels_last: bool = option(False, action=argparse.BooleanOptionalAction,
                                 help="channels-last memory format for the model and batches (fastseg-train's "
                                      "default: on for GPU)")
    # Scoring at the labels' resolution: masks exactly as the set holds them (padded with ignore to the batch's
    # largest) beside images resized to `size` (padded with 0 after normalization), and batch["sizes"]
    original_labels: bool = False
    keep_ratio: bool = False  # original_labels: resize to fit the scale `size` with the aspect kept (keep_ratio_size)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise FastsegError(f"unknown loader backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.batch_size < 1:
            raise FastsegError(f"the batch size must be at least 1, not {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise FastsegError(f"workers must be 0 or more, not {self.workers}")
        if isinstance(self.augment, bool):
            object.__setattr__(self, "augment", "flip" if self.augment else "none")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise FastsegError(f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTS)}")
        if self.size is not None:
            object.__setattr__(self, "size", _size(self.size))
        low, high = (float(v) for v in self.scale)
        if not 0 < low <= high <= 1:
            raise FastsegError(f"the crop scale is an area fraction range 0 < low <= high <= 1, not {self.scale!r}")
        object.__setattr__(self, "scale", (low, high))
        low, high = (float(v) for v in self.ratio_range)
        if not 0 < low <= high:
            raise FastsegError(f"the ratio range is 0 < low <= high, not {self.ratio_range!r}")
        object.__setattr__(self, "ratio_range", (low, high))
        if not 0 <= self.degrees <= 180:
            raise FastsegError(f"degrees is an angle from 0 to 180, not {self.degrees!r}")
        if not 0 < self.cat_max_ratio <= 1:
            raise FastsegError(f"cat_max_ratio is a share in (0, 1] (1 turns it off), not {self.cat_max_ratio!r}")
        if self.base_size is not None:
            object.__setattr__(self, "base_size", _size(self.base_size))
        if self.cache_limit is not None:
            try:
                parse_size(self.cache_limit)
            except argparse.ArgumentTypeError as err:
                raise FastsegError(f"cache_limit: {err}") from None
        if self.keep_ratio and not self.original_labels:
            raise FastsegError("keep_ratio resizes validation images for scoring at the labels' resolution; it needs "
                               "original_labels=True")
        if self.original_labels and self.augment not in (None, "none"):
            raise FastsegError(f"original_labels is for scoring: it takes no augmentation (augment={self.augment!r})")

    @property
    def mode(self) -> str:
        """What a backend runs per sample: "scoring" (original_labels), else the augmentation (decided)."""
        return "scoring" if self.original_labels else self.augment

    @property
    def evaluation_scale(self) -> tuple[int, int] | None:
        """The scale a model trained with this (decided) config is scored at by default, aspect kept: the mmseg
        recipe's base size, as MMSegmentation's test pipeline resizes; None: the training size, as trained."""
        return self.base_size if self.augment == "mmseg" else None

    def scoring_size(self, rows: int, cols: int) -> tuple[int, int]:
        """original_labels: the (height, width) a rows × cols image is resized to, `size` or its aspect-kept fit."""
        return keep_ratio_size(rows, cols, self.size) if self.keep_ratio else self.size

    @property
    def caching(self) -> bool:
        """Whether a set in an object store is read through the shard cache (cache.py) or by ranged GETs."""
        return self.cache is None or str(self.cache).lower() != "none"

    @classmethod
    def build(cls, base: LoaderConfig | None = None, **options) -> LoaderConfig:
        """`base` (or the defaults) with `options` replaced; an unknown option is named with the ones there are."""
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise FastsegError(f"unknown loader option(s) {', '.join(unknown)}; the options are "
                               f"{', '.join(f.name for f in fields(cls))}")
        return replace(base or cls(), **options)

    def for_split(self, manifest: Manifest, split: str, *, training: bool) -> LoaderConfig:
        """Every `None` decided for one split: its size, and augmentation and shuffle by whether it trains."""
        augment = self.augment or ("flip" if training else "none")
        return replace(
            self, size=self.size or native_size(manifest, split), augment=augment,
            base_size=self.base_size or (largest_size(manifest, split) if augment == "mmseg" else None),
            shuffle=training if self.shuffle is None else self.shuffle,
            workers=default_workers() if self.workers is None else self.workers,
        )


def keep_ratio_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an image resized to the scale (H, W) with its aspect kept, as MMSegmentation's
    `Resize(keep_ratio=True)` (mmcv.rescale_size) computes it: the factor min(long(scale) / long(image),
    short(scale) / short(image)), so portrait and landscape images fit the same scale alike; sides rounded."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def default_workers(devices: int = 1) -> int:
    """Loader threads or processes per device: the cores shared out among the devices."""
    return max(1, (os.cpu_count() or 1) // devices)


def _size(size) -> tuple[int, int]:
    sides = [size] if isinstance(size, int) else list(size)
    if len(sides) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in sides):
        raise FastsegError(f"an output size is H W, or one number for a square, not {size!r}")
    return (sides[0], sides[0]) if len(sides) == 1 else (sides[0], sides[1])


def largest_size(manifest: Manifest, split: str) -> tuple[int, int]:
    """(height, width) of the split's largest image (by area): the mmseg recipe's default base size."""
    width, height = max(manifest.sizes.get(split) or [[0, 0]], key=lambda size: size[0] * size[1])
    if not width:
        raise FastsegError(f"the manifest lists no image sizes for the {split} split; give base_size=(H, W) "
                           "(--base-size)")
    return height, width


def native_size(manifest: Manifest, split: str) -> tuple[int, int]:
    """(height, width) of a split whose images all have one size; otherwise the error that asks for a size."""
    sizes = manifest.sizes.get(split, [])
    if len(sizes) == 1:
        width, height = sizes[0]
        return height, width
    listed = ", ".join(f"{w}x{h}" for w, h in sizes[:5])
    raise FastsegError(f"the {split} split has images of {len(sizes)} sizes ({listed}); give an output size "
                       "(size=(H, W), or --image-size)")
