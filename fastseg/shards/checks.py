"""What a finished set's statistics warn about, each as one line naming the samples and what to do: the same picture
twice (by its pixels, whatever the file's name or format) within a split or across splits, near-identical
pictures across splits (a perceptual hash within looks.NEAR_BITS of 64 bits: a re-encoded copy, or neighbouring
frames of one video), a class with no pixel in a split, a class under 0.1% of a split's labelled pixels, and masks
with no labelled pixel. fastseg-shard prints them and keeps them in the manifest (`statistics`), where the report
reads them."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..format import ClassInfo, listing
from .looks import NEAR_BITS, near_pairs

RARE = 0.001  # a class under this share of a split's labelled pixels is named


def set_warnings(stats, classes: list[ClassInfo]) -> list[str]:
    """Every warning about the set whose running totals are `stats` (writer.Stats)."""
    return (_duplicates(stats.looks) + _near_duplicates(stats.looks) + _class_warnings(stats.class_hist, classes)
            + [f"{split}: {len(keys)} mask(s) with no labelled pixel (all ignore), which train and score nothing: "
               f"{listing(keys)}; check the masks or leave those samples out" for split, keys in
               stats.unlabelled.items() if keys])


def _duplicates(looks: dict[str, list]) -> list[str]:
    by_pixels = defaultdict(list)
    for split, rows in looks.items():
        for key, exact, _ in rows:
            by_pixels[exact].append(f"{split}/{key}")
    found = [names for names in by_pixels.values() if len(names) > 1]
    across = [names for names in found if len({name.partition("/")[0] for name in names}) > 1]
    within = [names for names in found if names not in across]
    lines = []
    if across:
        lines.append(f"{len(across)} image(s) in more than one split, the same pixels under other names (the model "
                     f"is scored on what it trained on): {listing([' = '.join(n) for n in across])}; remove one copy")
    if within:
        lines.append(f"{len(within)} image(s) more than once within a split, the same pixels: "
                     f"{listing([' = '.join(n) for n in within])}; remove the copies, or they weigh double")
    return lines


def _near_duplicates(looks: dict[str, list]) -> list[str]:
    """Pairs of pictures in two splits that look alike (and are not the same pixels, said already)."""
    lines, splits = [], sorted(looks)
    for i, first in enumerate(splits):
        for second in splits[i + 1:]:
            left, right = looks[first], looks[second]
            hashes = [np.array([row[2] for row in rows], np.uint64) for rows in (left, right)]
            exact = {row[1] for row in left} & {row[1] for row in right}  # named already, as the same pixels
            pairs = [(a, b) for a, b in near_pairs(*hashes) if left[a][1] not in exact and right[b][1] not in exact]
            pairs.sort(key=lambda pair: int(hashes[0][pair[0]] ^ hashes[1][pair[1]]).bit_count())  # closest first
            if pairs:
                named = [f"{first}/{left[a][0]} ~ {second}/{right[b][0]}" for a, b in pairs]
                share = len({b for _, b in pairs}) / len(right)
                lines.append(f"{len(pairs)} pair(s) of near-identical images across {first} and {second} "
                             f"(perceptual hash within {NEAR_BITS} of 64 bits; {share:.0%} of {second}'s images "
                             f"have one): {listing(named)}; frames of one video or copies of one picture in both "
                             "splits make validation measure memory: carve val by groups (--group-by REGEX)")
    return lines


def _class_warnings(class_hist: dict[str, np.ndarray], classes: list[ClassInfo]) -> list[str]:
    lines = []
    for split, hist in class_hist.items():
        labelled = sum(int(hist[c.id]) for c in classes)
        absent = [c.name for c in classes if not hist[c.id]]
        if absent:
            lines.append(f"{split}: class(es) with no pixel: {', '.join(absent)}; their IoU there is undefined and "
                         "leaves the mean" if split != "train" else
                         f"train: class(es) with no pixel: {', '.join(absent)}; the model never sees them")
        rare = [f"{c.name} {hist[c.id] / labelled:.3%}" for c in classes
                if labelled and 0 < hist[c.id] < RARE * labelled]
        if rare:
            lines.append(f"{split}: class(es) under {RARE:.1%} of the labelled pixels: {', '.join(rare)}; consider "
                         "class weights (--class-weights median-freq) or merging classes")
    return lines
