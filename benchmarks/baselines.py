"""The baselines the benchmarks time fastseg against, and what they read: the tutorial DataLoader ("vanilla": Pillow
over the source files, flips and crops in Python, MMSegmentation's recipe step by step), the source files of a shard
set's train split, and the default synthetic dataset. ("Recipe" means one thing in fastseg: MMSegmentation's
training recipe, loading/recipe.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def mmseg_sample(image, mask, rng, size, base, ratio_range, cat_max_ratio, photometric):
    """MMSegmentation's recipe on one Pillow pair, as its transforms run it: the whole image resized, then cropped
    (cat_max_ratio tested on the resized mask), flipped, distorted; uint8 arrays of `size`, padded with 0 and ignore,
    and the crop's (rows, columns)."""
    from PIL import Image

    from fastseg.loading import draws, recipe

    resized = recipe.resized_size(image.size[1], image.size[0], base, rng.uniform(*ratio_range))
    image = np.asarray(image.resize(resized[::-1], Image.BILINEAR, reducing_gap=None))
    mask = np.asarray(mask.resize(resized[::-1], Image.NEAREST))
    top, left = exact_crop(mask, size, rng.uniform(size=(draws.DRAWS, 2)), cat_max_ratio)
    image, mask = image[top:top + size[0], left:left + size[1]], mask[top:top + size[0], left:left + size[1]]
    if rng.uniform() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if photometric:
        image = recipe.photometric(image, draws.photometric_draws(rng))
    rows, cols = mask.shape
    padded, labels = np.zeros((*size, 3), np.uint8), np.full(size, 255, np.uint8)
    padded[:rows, :cols], labels[:rows, :cols] = image, mask
    return padded, labels, (rows, cols)


def exact_crop(mask: np.ndarray, size, corners, cat_max_ratio: float) -> tuple[int, int]:
    """MMSegmentation's RandomCrop as it runs: every pixel of each candidate crop of the resized mask counted (fastseg
    counts a 128×128 grid of them: recipe.pick_crop)."""
    from fastseg.loading import draws, recipe

    margin_rows, margin_cols = max(mask.shape[0] - size[0], 0), max(mask.shape[1] - size[1], 0)
    found = [(min(int(u * (margin_rows + 1)), margin_rows), min(int(v * (margin_cols + 1)), margin_cols))
             for u, v in corners]
    if cat_max_ratio < 1:
        for top, left in found[:draws.CROP_TRIES]:
            if recipe.acceptable(mask[top:top + size[0], left:left + size[1]], cat_max_ratio):
                return top, left
    return found[0] if cat_max_ratio >= 1 else found[-1]


def vanilla_loader(pairs, mean, std, batch_size, workers, size, augment="flip", scale=(0.5, 1.0), mmseg=None):
    """Pillow decode in the workers; crop (in crop mode), resize to `size`, flip and normalize there too. mmseg: the
    options of mmseg_sample (base, ratio_range, cat_max_ratio, photometric), the padding 0 after normalizing."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from fastseg.loading import draw_crop

    class FolderDataset(Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            image = Image.open(pairs[i][0]).convert("RGB")
            mask = Image.open(pairs[i][1])
            if augment == "mmseg":
                image, mask, (rows, cols) = mmseg_sample(image, mask, np.random.default_rng(), size, **mmseg)
                image = (image.astype(np.float32) - mean) / std
                image[rows:], image[:, cols:] = 0, 0
                return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
                        "mask": torch.from_numpy(mask.astype(np.int64))}
            box = draw_crop(np.random.default_rng(), *image.size, scale) if augment == "crop" else None
            if box is not None or (size and image.size != (size[1], size[0])):
                image = image.resize((size[1], size[0]), Image.BILINEAR, box=box, reducing_gap=None)
                mask = mask.resize((size[1], size[0]), Image.NEAREST, box=box)
            image, mask = np.asarray(image, np.float32), np.asarray(mask, np.int64)
            if np.random.rand() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            image = (image - mean) / std
            return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()), "mask": torch.from_numpy(mask.copy())}

    # pinned, as the tutorial has it: on a GPU, .to(cuda, non_blocking=True) from pageable memory blocks
    return DataLoader(FolderDataset(), batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def train_pairs(shards) -> list[tuple[str, str]]:
    """(image, mask) source files of the train split, from the json member of each sample (on disk or in a
    bucket: read by offset through the index either way)."""
    from fastseg.fetching import SpanReader
    from fastseg.format import META_EXT
    from fastseg.sets import check_shards, index_samples, open_set

    paths, indexes = check_shards(open_set(shards), "train", checksums=False)
    read = SpanReader(paths)
    metas = [json.loads(read(path, *members[META_EXT])) for path, index in zip(paths, indexes)
             for _, members in index_samples(index)]
    return [(meta["image"], meta["mask"]) for meta in metas]


def default_dataset(tmp: Path) -> tuple[Path, Path]:
    from fastseg.shards import ShardOptions, generate, shard

    data = generate(tmp / "synthetic", count=160)
    shard(data, tmp / "shards", ShardOptions(classes=data / "classes.json", progress=False))
    return data, tmp / "shards"


def linked_copies(src: Path, out: Path, copies: int) -> Path:
    """An images/ + masks/ folder set `copies` times over: src's files linked under other names (cN_NAME)."""
    for kind in ("images", "masks"):
        (out / kind).mkdir(parents=True)
        for copy in range(copies):
            for path in sorted((Path(src) / kind).iterdir()):
                (out / kind / f"c{copy}_{path.name}").symlink_to(Path(path).resolve())
    return out
