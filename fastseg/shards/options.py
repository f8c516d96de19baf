"""ShardOptions: what fastseg-shard's flags decide, in one dataclass that every stage of the writer reads; each
option's default, help and parsing beside it (settings.option), from which fastseg-shard makes its flags."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..settings import option, parse_size
from .encode import STORES
from .masks import parse_value_map

@dataclass
class ShardOptions:
    images: Path | None = option(None, deciding=True, type=Path,
                                 help="image folder (with --masks, instead of SRC's layout)")
    masks: Path | None = option(None, deciding=True, type=Path, help="mask folder matching --images")
    classes: Path | None = option(None, type=Path, help='JSON list of {"name", "color"}; order gives the class ids')
    ignore_value: int | None = option(None, deciding=True, type=int,
                                      help="a mask value to store as 255 (ignore), e.g. 11 for CamVid's void")
    val_fraction: float = option(0.1, deciding=True, type=float,
                                 help="validation share carved out when no val split exists")
    seed: int = option(0, deciding=True, type=int, help="the validation carve and the order samples are written in")
    shard_size: int = option(256 * 1024**2, deciding=True, type=parse_size,
                             help="target bytes per shard: 256MiB, or 256MB (10⁶ bytes); in bytes")
    max_count: int | None = option(None, deciding=True, type=int, help="at most this many samples per shard")
    resize_masks: bool = option(False, deciding=True, action="store_true",
                                help="resize masks whose size differs (nearest neighbour)")
    skip_unpaired: bool = option(False, deciding=True, action="store_true",
                                 help="leave out files without a partner instead of failing")
    overwrite: bool = option(False, action="store_true", help="replace OUT if it exists")
    unannotated: str = option("background", deciding=True, choices=("background", "ignore"),
                              help="COCO: pixels no annotation covers are the class `background`, or ignored "
                                   "(COCO-Stuff's 'unlabeled')")
    coco: list[Path] | None = option(None, deciding=True, type=Path, nargs="+", metavar="FILE",
                                     help="COCO JSON files to read (default: SRC/annotations/*.json)")
    image_column: str | None = option(None, deciding=True, metavar="NAME",
                                      help="parquet: the column holding the images (default: found by name)")
    mask_column: str | None = option(None, deciding=True, metavar="NAME",
                                     help="parquet: the column holding the masks (default: found by name)")
    keep_zero_label: bool = option(False, deciding=True, action="store_true",
                                   help="ADE20K: keep mask value 0 ('other') as a class instead of ignoring it")
    mask_threshold: int | None = option(None, deciding=True, type=int, metavar="T",
                                        help="binary masks stored lossy or anti-aliased (JPEG masks, say): "
                                             "brightness >= T is foreground")
    pair_key: str | None = option(None, deciding=True, metavar="REGEX",
                                  help="pair images and masks by the regex's first group of their name stems, e.g. "
                                       "'^(\\d+)_' pairs 21_training.tif with 21_manual1.gif")
    group_by: str | None = option(None, deciding=True, metavar="REGEX",
                                  help="carve the validation split by whole groups: the regex's first group of an "
                                       "image's name stem names its group, e.g. '^(.*)_\\d+$' keeps each video of "
                                       "bear_00012-style frames in one split")
    map_values: dict[int, int] | None = option(None, deciding=True, type=parse_value_map, metavar="SRC:DST,...",
                                               help="mask values to class ids, e.g. 1:1,2:0,3:255 (255 = ignore); any "
                                                    "other value is an error")
    store: str = option("auto", deciding=True, choices=STORES,
                        help="how images and masks are stored: auto (JPEG sets as source; sets without JPEG files as "
                             "raw images and PNG masks), source (image bytes as they are, masks as fast PNG), "
                             "fast-png (lossless images re-encoded with unfiltered rows), raw (images and masks as "
                             "pixels, never decoded; no JPEG sets). JPEG is never re-encoded")
    part: tuple[int, int] | None = None  # (index, count): write part `index` of `count` (--part I/N), to be merged
    workers: int = option(default_factory=lambda: os.cpu_count() or 1, type=int,
                          help="processes (default: all cores)")
    progress: bool = True  # fastseg-shard's --quiet turns it off
