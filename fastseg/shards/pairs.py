"""Find image/mask pairs and their splits in the layouts users bring."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import FastsegError
from ..format import SPLITS, make_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
MASK_SUFFIXES = {".png", ".gif", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg"}
# Name endings that mask files commonly add to their image's stem: car_01.jpg ↔ car_01_mask.png
MASK_STEM_ENDINGS = ("_mask", "-mask", "_masks", "_label", "-label", "_labels", "_gt", "_seg", "_segmentation",
                     "_annotation", "_annot", "_L")
MAX_KEY = 80  # tar (ustar) names stay short enough for every reader


@dataclass(frozen=True)
class Pair:
    key: str
    image: Path
    mask: Path


@dataclass
class FoundPairs:
    splits: dict[str, list[Pair]]  # None-split data sits under "all" until split_off_val
    unpaired: list[Path]
    layout: str = ""  # which layout they were found in (GENERIC_LAYOUTS, or the folders given)


def _files(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    """Relative stem ('seq/00001') → file, for the files with a known suffix under `folder` (recursively)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in suffixes or path.name.startswith(".") or not path.is_file():
            continue
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise FastsegError(f"{found[stem]} and {path} have the same name stem; keep one of them")
        found[stem] = path
    return found


def compile_pair_key(pattern: str) -> re.Pattern:
    """`--pair-key REGEX`: its first group that takes part in a match is the pairing key of a file stem."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise FastsegError(f"--pair-key {pattern!r} is not a regular expression ({err})") from err
    if not compiled.groups:
        raise FastsegError(f"--pair-key {pattern!r} has no group; put the part both names share in parentheses, "
                           r"e.g. '^(\d+)_' pairs 21_training.tif with 21_manual1.gif")
    return compiled


def _by_key(files: dict[str, Path], pattern: re.Pattern, side: str) -> tuple[dict[str, Path], list[Path]]:
    """Files by pairing key (the folder part of the stem kept), and those whose name the pattern does not match."""
    keyed, unmatched = {}, []
    for stem, path in files.items():
        folder, _, name = stem.rpartition("/")
        match = pattern.search(name)
        key = next((g for g in match.groups() if g is not None), None) if match else None
        if key is None:
            unmatched.append(path)
            continue
        key = f"{folder}/{key}" if folder else key
        if key in keyed:
            raise FastsegError(f"--pair-key {pattern.pattern!r} gives two {side} the key {key!r}: {keyed[key]} and "
                               f"{path}; make the pattern tell them apart")
        keyed[key] = path
    return keyed, unmatched


def pair_folders(images: Path, masks: Path, pair_key: re.Pattern | None = None) -> tuple[list[Pair], list[Path]]:
    """The pairs of two folders, and the files left without a partner. Masks pair with the image of the same
    stem, or of the stem without a usual mask ending (MASK_STEM_ENDINGS), or with `pair_key` by the key both
    stems give."""
    for folder in (images, masks):
        if not folder.is_dir():
            raise FastsegError(f"{folder}: no such folder")
    image_files = _files(images, IMAGE_SUFFIXES)
    mask_files = _files(masks, MASK_SUFFIXES)
    if not image_files:
        raise FastsegError(f"{images}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    unpaired = []
    if pair_key is not None:
        image_files, lonely_images = _by_key(image_files, pair_key, "images")
        by_stem, lonely_masks = _by_key(mask_files, pair_key, "masks")
        unpaired = lonely_images + lonely_masks
    else:
        by_stem = {}
        for stem, path in mask_files.items():
            match = stem
            if match not in image_files:
                match = next((stem[: -len(e)] for e in MASK_STEM_ENDINGS if stem.endswith(e)), stem)
            by_stem[match] = path
    pairs, keys = [], set()
    for match, image in image_files.items():
        mask = by_stem.pop(match, None)
        if mask is None:
            unpaired.append(image)
            continue
        stem = image.relative_to(images).with_suffix("").as_posix()
        key = make_key(stem)[:MAX_KEY]
        while key in keys:  # two stems that sanitise alike ('a.b' and 'a_b') stay apart
            key = f"{key[:MAX_KEY - 4]}_{len(keys) % 1000:03d}"
        keys.add(key)
        pairs.append(Pair(key, image, mask))
    return pairs, unpaired + sorted(by_stem.values())


GENERIC_LAYOUTS = ("SRC/images + SRC/masks", "SRC/{train,val,test}/{images,masks}", "SRC/{trainA,trainB,valA,…}")


def find_pairs(src: Path, images: Path | None = None, masks: Path | None = None,
               pair_key: re.Pattern | None = None, also_tried: tuple[str, ...] = ()) -> FoundPairs:
    """The pairs per split. Layouts, tried in order: --images/--masks; SRC/{train,val,test}/{images,masks};
    SRC/{trainA,trainB,valA,…} (A images, B masks); SRC/images + SRC/masks. `also_tried`: the layouts the caller
    tried first, named in the error when none fits."""
    if images or masks:
        if not (images and masks):
            raise FastsegError("--images and --masks go together; give both folders")
        layouts, layout = {"all": (images, masks)}, "the folders given (--images, --masks)"
    else:
        if not src.is_dir():
            raise FastsegError(f"{src}: no such folder")
        layouts = {s: (src / s / "images", src / s / "masks") for s in SPLITS if (src / s / "images").is_dir()}
        layout = GENERIC_LAYOUTS[1]
        if not layouts:
            layouts = {s: (src / f"{s}A", src / f"{s}B") for s in SPLITS if (src / f"{s}A").is_dir()}
            layout = GENERIC_LAYOUTS[2]
        if not layouts and (src / "images").is_dir():
            layouts, layout = {"all": (src / "images", src / "masks")}, GENERIC_LAYOUTS[0]
        if not layouts:
            raise FastsegError(
                f"{src}: no layout found; tried {', '.join(also_tried + GENERIC_LAYOUTS)}. For other folders: "
                "--images DIR --masks DIR, with --pair-key REGEX where the names differ (e.g. '^(\\d+)_' pairs 21_training.tif with 21_manual1.gif)"
            )
    splits, unpaired = {}, []
    for split, (image_dir, mask_dir) in layouts.items():
        pairs, lonely = pair_folders(image_dir, mask_dir, pair_key)
        splits[split] = pairs
        unpaired += lonely
    if not any(splits.values()):
        looked = ", ".join(f"{i} and {m}" for i, m in layouts.values())
        how = "by --pair-key" if pair_key else "with the same name stem (or the stem plus _mask, _gt, …)"
        raise FastsegError(f"no image has a mask {how} in {looked}; check the file names, or give --pair-key REGEX "
                           "whose first group is the part image and mask names share")
    return FoundPairs(splits, unpaired, layout)


def split_off_val(splits: dict[str, list[Pair]], fraction: float, seed: int,
                  group_by: str | None = None) -> dict[str, list[Pair]]:
    """Keep existing splits; where there is no validation split, carve a seeded one out of the training data: single
    samples at random, or with `group_by` (a regex whose first group of an image's stem names its group: a video, a
    patient) whole groups, the share nearest `fraction` that whole groups give."""
    splits = dict(splits)
    if "all" in splits:
        splits["train"] = splits.pop("all")
    if "val" in splits or "train" not in splits or fraction <= 0:
        return splits
    if group_by is not None:
        return _carve_groups(splits, fraction, seed, group_by)
    train = list(splits["train"])
    warn_of_sequences(train)
    random.Random(seed).shuffle(train)
    count = max(1, round(len(train) * fraction)) if len(train) > 1 else 0
    if count:
        splits["val"] = sorted(train[:count], key=lambda p: p.key)
        splits["train"] = sorted(train[count:], key=lambda p: p.key)
    return splits


def groups_of(pairs: list[Pair], group_by: str) -> dict[str, list[Pair]]:
    """The pairs by group: the regex's first group of each image's stem; a stem it does not match is an error."""
    try:
        pattern = re.compile(group_by)
    except re.error as err:
        raise FastsegError(f"--group-by {group_by!r} is not a regular expression ({err})") from None
    if pattern.groups < 1:
        raise FastsegError(f"--group-by {group_by!r} has no group: put the part that names the group in "
                           "parentheses, e.g. '^(.*)_\\d+$' for bear_00012")
    groups: dict[str, list[Pair]] = {}
    for pair in pairs:
        found = pattern.search(pair.image.stem)
        if found is None or found.group(1) is None:
            raise FastsegError(f"--group-by {group_by!r} does not match {pair.image} (its stem "
                               f"{pair.image.stem!r}); give a regex that every image's stem matches")
        groups.setdefault(found.group(1), []).append(pair)
    return groups


def _carve_groups(splits: dict[str, list[Pair]], fraction: float, seed: int, group_by: str) -> dict[str, list[Pair]]:
    groups = groups_of(splits["train"], group_by)
    if len(groups) < 2:
        raise FastsegError(f"--group-by {group_by!r} finds one group only ({next(iter(groups))!r}): a validation "
                           "split of whole groups needs two or more; check the regex, or give a val folder")
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    total, target = len(splits["train"]), fraction * len(splits["train"])
    val, taken = set(), 0
    for name in names:  # in seeded order, each group that brings val nearer the share it asks for
        if abs(taken + len(groups[name]) - target) < abs(taken - target) and len(val) < len(names) - 1:
            val.add(name)
            taken += len(groups[name])
    if not val:  # every group alone overshoots further than none: the smallest, so that val is not empty
        val.add(min(names, key=lambda name: len(groups[name])))
    splits["val"] = sorted((p for name in val for p in groups[name]), key=lambda p: p.key)
    splits["train"] = sorted((p for name in names if name not in val for p in groups[name]), key=lambda p: p.key)
    share = len(splits["val"]) / total
    print(f"--group-by: val holds {len(val)} of {len(groups)} groups, {len(splits['val'])} of {total} samples "
          f"({share:.1%}; {fraction:.1%} asked{', the nearest whole groups give' if abs(share - fraction) > 0.005 else ''})")
    return splits


# numbered frames of named sequences: bear_00012, car-shadow_00003, seq3-frame0042
_FRAME = re.compile(r"^(.*?)[_-]?(?:frame)?\d+$")


def warn_of_sequences(pairs: list[Pair]) -> None:
    """A random carve of numbered frames from a few named sequences puts neighbouring, near-identical frames of one
    sequence in train and val; say so and name the flag that keeps each sequence in one split."""
    found = [_FRAME.match(p.image.stem) for p in pairs]
    prefixes = {m.group(1) for m in found if m and m.group(1)}
    if len(pairs) < 4 or sum(bool(m and m.group(1)) for m in found) < 0.9 * len(pairs) or \
            not 1 < len(prefixes) <= len(pairs) // 4:
        return
    example = pairs[0].image.stem
    print(f"warning: the image names look like numbered frames of {len(prefixes)} sequences ({example}, ...): a "
          "random validation split puts neighbouring frames of one sequence in both splits, so validation measures "
          "memory of near-identical frames; keep each sequence in one split with --group-by '^(.*)_\\d+$' (the "
          "regex's first group names the sequence)")