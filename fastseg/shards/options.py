"""ShardOptions: what fastseg-shard's flags decide, in one dataclass that every stage of the writer reads."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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
    group_by: str | None = None  # a regex whose first group of an image's stem names its group: val carves groups
    map_values: dict[int, int] | None = None  # source mask value → class id (255 = ignore)
    store: str = "auto"  # how images and masks are stored (encode.STORES, encode.storage_for)
    part: tuple[int, int] | None = None  # (index, count): write part `index` of `count`, to be merged
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True
