"""Tiny real files made in tmp_path, and the shared datasets beside the repository."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_runtest_setup(item):
    """A `cuda` test skips where there is no CUDA device, unless the run asked for one (FASTSEG_REQUIRE_CUDA=1, as
    the GPU device kit sets): then a missing CUDA (a CPU build of torch on a GPU machine, say) is a failure."""
    import torch

    if item.get_closest_marker("cuda") is None or torch.cuda.is_available():
        return
    if os.environ.get("FASTSEG_REQUIRE_CUDA") == "1":
        pytest.fail(f"FASTSEG_REQUIRE_CUDA=1 but torch {torch.__version__} sees no CUDA device", pytrace=False)
    pytest.skip("needs a CUDA GPU")


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared datasets sit beside the repository)")
    return path


def textured(width: int, height: int, seed: int) -> np.ndarray:
    """An RGB image with structure (so JPEG has something to do) and a seed-dependent look."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y + seed * 7) % 256], -1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def disk_mask(width: int, height: int, seed: int, classes: int = 2) -> np.ndarray:
    """Class indices 0..classes-1: a disk, and a bar for the third class and up."""
    y, x = np.mgrid[0:height, 0:width]
    cx, cy = (seed * 5) % width, (seed * 3) % height
    mask = np.zeros((height, width), np.uint8)
    mask[(x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) // 3) ** 2] = 1
    for c in range(2, classes):
        mask[(y // 4) % classes == c] = c
    return mask


def save(array_or_image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path, **kw)
    return path


def make_dataset(root: Path, count: int = 6, size=(40, 32), image_ext: str = "jpg", mask: str = "binary",
                 classes: int = 2, first_seed: int = 0) -> Path:
    """root/images/*.{image_ext} + root/masks/*.png; mask is 'binary' (0/255), 'index', or 'palette'."""
    width, height = size
    for i in range(first_seed, first_seed + count):
        save(textured(width, height, i), root / "images" / f"s{i:03d}.{image_ext}")
        indices = disk_mask(width, height, i, classes)
        if mask == "binary":
            save(indices * 255, root / "masks" / f"s{i:03d}.png")
        elif mask == "palette":
            img = Image.fromarray(indices, "P")
            img.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * 756)
            save(img, root / "masks" / f"s{i:03d}.png")
        else:
            save(indices, root / "masks" / f"s{i:03d}.png")
    return root


def samples_by_key(batches) -> dict:
    """key -> (image, mask) of the real samples of batches (padding left out): for comparing the samples of two
    epochs whose orders differ (a set in a store is read shard-windowed in its first epoch: loading/order.py)."""
    return {key: (image, mask) for b in batches
            for key, image, mask in list(zip(b["key"], b["image"], b["mask"]))[:b["real"]]}


def assert_same_samples(batches, others) -> None:
    ours, theirs = samples_by_key(batches), samples_by_key(others)
    assert sorted(ours) == sorted(theirs)
    for key, (image, mask) in ours.items():
        assert torch_equal(mask, theirs[key][1]) and torch_equal(image, theirs[key][0]), key


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def corrupt_one_image(shards: Path, copy: Path) -> str:
    """A copy of a shard set with one sample's image (or, where images are stored raw, its mask PNG) first bytes
    zeroed and the manifest's sha256 fixed up, so that the start-up checks pass and only decoding can find it;
    returns the key of the broken sample."""
    import json

    from fastseg.format import parse_index, sha256_file

    copy.mkdir(parents=True, exist_ok=True)
    for f in shards.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    tar = copy / "train-000000.tar"
    _, offset, _, name = next(m for m in parse_index((copy / "train-000000.idx").read_text(), "idx")[2]
                              if m[0] in ("image.jpg", "image.png", "mask.png"))
    data = bytearray(tar.read_bytes())
    data[offset : offset + 64] = bytes(64)  # no image header any more: same size, content broken
    tar.write_bytes(bytes(data))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["sha256"] = sha256_file(tar)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return name.partition(".")[0]


def split_shards(root: Path, size=(32, 32), image_ext: str = "png", train: int = 16, val: int = 6) -> Path:
    """root/shards: train and val splits of 3-class index masks, at most 5 samples a shard (so shards roll over)."""
    from fastseg.shards import ShardOptions, shard

    make_dataset(root / "data/train", count=train, size=size, image_ext=image_ext, mask="index", classes=3)
    make_dataset(root / "data/val", count=val, size=size, image_ext=image_ext, mask="index", classes=3, first_seed=50)
    shard(root / "data", root / "shards", ShardOptions(max_count=5, progress=False, workers=2))
    return root / "shards"
