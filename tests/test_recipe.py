"""augment="mmseg": MMSegmentation's recipe in both loaders: sizes, padding, the ratio range, cat_max_ratio, the
colour steps (image only), both backends alike in distribution, and the rules shared with recipe.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastseg.loading import make_loader
from fastseg.loading import recipe
from fastseg.shards import ShardOptions, shard

from .conftest import save

BACKENDS = ["dali", "torch"]
QUIET = dict(progress=False, workers=1)


def halves(root, count=8, size=(64, 48), square=0):
    """Images whose left half is class 1 (red) and right half class 2 (green); or, with `square`, class 1 around a
    centred class-2 square of that side."""
    width, height = size
    for i in range(count):
        mask = np.full((height, width), 2, np.uint8)
        mask[:, : width // 2] = 1
        if square:
            top, left = (height - square) // 2, (width - square) // 2
            mask[:] = 1
            mask[top:top + square, left:left + square] = 2
        image = np.zeros((height, width, 3), np.uint8)
        image[mask == 1], image[mask == 2] = (220, 30, 30), (30, 220, 30)
        image[..., 2] = i * 20  # samples differ
        save(image, root / "data/images" / f"h{i}.png")
        save(mask, root / "data/masks" / f"h{i}.png")
    shard(root / "data", root / "shards", ShardOptions(val_fraction=0, **QUIET))
    return root / "shards"


@pytest.fixture(scope="module")
def half_shards(tmp_path_factory):
    return halves(tmp_path_factory.mktemp("halves"))


def samples(shards, backend, epochs=6, device="cpu", **options):
    """Every (image, mask) the loader gives over `epochs` epochs, real samples only, on the CPU."""
    loader = make_loader(shards, backend=backend, batch_size=4, augment="mmseg", workers=0 if backend == "torch"
                         else 1, device=device, **options)
    found = []
    for _ in range(epochs):
        for batch in loader:
            found += list(zip(batch["image"][: batch["real"]].cpu(), batch["mask"][: batch["real"]].cpu()))
    return loader, found


@pytest.mark.parametrize("backend", BACKENDS)
def test_crops_have_the_size_pad_with_ignore_and_zero_and_reach_the_ratio_range(backend, half_shards):
    loader, found = samples(half_shards, backend, size=(48, 64), photometric=False)
    assert loader.plan.config.base_size == (48, 64)  # the split's largest image by default
    padded = up = 0
    for image, mask in found:
        assert image.shape == (3, 48, 64) and mask.shape == (48, 64)
        assert set(mask.unique().tolist()) <= {1, 2, 255}  # nearest neighbour only: no new class values
        pad = mask == 255
        assert (image[:, pad] == 0).all()  # 0 after normalization where padded
        if pad.any():
            padded += 1  # shrunk below the crop: ratio < 1
            assert pad[-1].all() or pad[:, -1].all()  # at the bottom or right
        elif float((mask == 1).float().mean()) != 0.5:  # a window of an enlarged image: another share of red
            up += 1
    # r uniform in 0.5..2: a third of the draws shrink (and pad), two thirds enlarge
    assert 0.15 < padded / len(found) < 0.55 and up / len(found) > 0.35


def test_both_backends_agree_in_distribution(half_shards):
    shares = {}
    for backend in BACKENDS:
        _, found = samples(half_shards, backend, epochs=12, size=(48, 64), photometric=False)
        pad = np.mean([float((m == 255).float().mean()) for _, m in found])
        rows = [m[0][m[0] != 255] for _, m in found]  # the top row is never padding
        flipped = np.mean([float(row[0] == 2) for row in rows if (row == 1).any() and (row == 2).any()])
        shares[backend] = pad, flipped
    # padding: E[1 - r²; r < 1] / 1.5 ≈ 0.139 of the pixels; flips: half the samples
    for pad, flipped in shares.values():
        assert 0.07 < pad < 0.22 and 0.35 < flipped < 0.65
    assert abs(shares["dali"][0] - shares["torch"][0]) < 0.07 and abs(shares["dali"][1] - shares["torch"][1]) < 0.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_cat_max_ratio_redraws_crops_one_class_fills(backend, tmp_path):
    shards = halves(tmp_path, count=4, size=(64, 64), square=20)  # class 1 fills 90% of each image

    def one_class_share(cat_max_ratio):
        _, found = samples(shards, backend, epochs=16, size=(24, 24), base_size=(64, 64), ratio_range=(1.0, 1.0),
                           cat_max_ratio=cat_max_ratio, photometric=False)
        filled = [m[m != 255] for _, m in found]
        return np.mean([float(torch.bincount(m, minlength=3).max()) / len(m) >= 0.75 for m in filled])

    unlimited, limited = one_class_share(1.0), one_class_share(0.75)
    # 24×24 crops of a 64×64 image around a 20×20 square: most fall mainly on class 1; a quarter or so cover
    # enough of the square, and ten tries nearly always find one
    assert unlimited > 0.4 and limited < 0.2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_photometric_changes_the_image_never_the_mask(backend, device, half_shards):
    """On a GPU, DALI runs the recipe's own path there: the window resized and coloured by GPU operators."""
    _, plain = samples(half_shards, backend, epochs=2, device=device, size=(32, 32), photometric=False, seed=4)
    _, coloured = samples(half_shards, backend, epochs=2, device=device, size=(32, 32), photometric=True, seed=4)
    changed = 0
    for (image, mask), (image2, mask2) in zip(plain, coloured):
        assert torch.equal(mask, mask2)  # the same geometry: the colour draws come after it
        assert (image2[:, mask2 == 255] == 0).all()  # padding stays 0 after the colour steps
        changed += int(not torch.allclose(image, image2))
    assert changed > len(plain) // 2  # each step has p = 0.5: nearly every sample gets at least one


def test_the_colour_transform_composes_dalis_steps():
    """recipe.photometric (OpenCV, one affine transform) against DALI's own operators run step by step on pixels no
    step pushes out of range: the same colours up to rounding."""
    from nvidia.dali import fn, pipeline_def, types

    rng = np.random.default_rng(0)
    image = rng.integers(60, 190, (16, 16, 3)).astype(np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def steps():
        pixels = types.Constant(image, device="cpu", layout="HWC")
        pixels = fn.brightness_contrast(pixels, brightness_shift=-20 / 255)  # uint8: the shift is x 255
        pixels = fn.brightness_contrast(pixels, contrast=1.2, contrast_center=0.0, dtype=types.FLOAT)
        return fn.hsv(pixels, hue=-24.0, saturation=1.3)

    pipe = steps()
    pipe.build()
    dali = np.array(pipe.run()[0][0])
    ours = recipe.photometric(image, np.array([-20.0, 1.2, 1.3, -24.0]))
    assert ours.dtype == np.uint8 and np.abs(ours.astype(float) - np.clip(dali, 0, 255)).max() <= 1
    assert np.array_equal(recipe.photometric(image, np.array([0.0, 1.0, 1.0, 0.0])), image)  # identity draws
    bright = recipe.photometric(np.full((2, 2, 3), 250, np.uint8), np.array([32.0, 1.0, 1.0, 0.0]))
    assert (bright == 255).all()  # clipped as uint8 is


def test_the_shared_rules():
    # RandomResize: base·ratio truncated, then the aspect-kept fit (portrait and landscape alike)
    assert recipe.resized_size(1024, 2048, (512, 1024), 1.5) == (768, 1536)
    assert recipe.resized_size(2048, 1024, (512, 1024), 1.0) == (1024, 512)
    # RandomCrop: the first acceptable draw, the last if none of the first ten is
    mask = np.zeros((10, 10), np.uint8)
    mask[:, 8:] = 1
    draws = np.array([[0.0, 0.0]] * 3 + [[0.0, 0.99]] + [[0.5, 0.5]] * 7)
    assert recipe.pick_crop(mask, (10, 10), (4, 4), draws, 0.75) == (0, 6)
    assert recipe.pick_crop(mask, (10, 10), (4, 4), draws, 1.0) == (0, 0)
    assert recipe.pick_crop(np.zeros((10, 10), np.uint8), (10, 10), (4, 4), draws, 0.75) == (3, 3)
    # a crop larger than the image: the corner is 0
    assert recipe.pick_crop(mask, (10, 10), (16, 16), draws, 0.75) == (0, 0)
    # the crop's window resampled alone is the whole image resized, then cut (OpenCV's own resize), flips included
    import cv2

    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3)).astype(np.uint8)
    whole = cv2.resize(image, (60, 45), interpolation=cv2.INTER_LINEAR)
    window = (10 * 30 / 45, 12 * 40 / 60, 30 * 30 / 45, 36 * 40 / 60)  # rows 10..30, columns 12..36 of 45×60
    cut = recipe.resample_window(image, window, (20, 24))
    assert np.abs(cut.astype(int) - whole[10:30, 12:36]).max() <= 1
    flipped = recipe.resample_window(image, (window[0], window[3], window[2], window[1]), (20, 24))
    assert np.abs(flipped.astype(int) - whole[10:30, 12:36][:, ::-1]).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_fastseg_train_runs_the_recipe_from_its_flags(backend, half_shards, tmp_path, capsys):
    import json

    from fastseg.cli import run_cli
    from fastseg.cli.train import main

    argv = ["--shards", str(half_shards), "--out", str(tmp_path / "run"), "--epochs", "1", "--loader", backend,
            "--augment", "mmseg", "--base-size", "48", "64", "--ratio-range", "0.75", "1.5", "--cat-max-ratio", "0.9",
            "--image-size", "32", "48", "--width", "4", "--batch-size", "4", "--workers", "1", "--accelerator", "cpu",
            "--val-split", "train"]
    assert run_cli("fastseg-train", main, argv) == 0
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert (config["augment"], config["base_size"], config["ratio_range"], config["cat_max_ratio"],
            config["photometric"]) == ("mmseg", [48, 64], [0.75, 1.5], 0.9, True)
    # a model trained on crops is scored at its base size, aspect kept (MMSegmentation's test resize)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["eval_size"] == [48, 64] and metrics["eval_resize"].startswith("aspect kept")
    assert metrics["val_pixels"] == 8 * 48 * 64  # every label pixel of the split, at its own resolution
    assert run_cli("fastseg-train", main, [*argv[:2], "--out", str(tmp_path / "bad"), "--ratio-range", "2", "1",
                                            "--augment", "mmseg", *argv[4:6], "--val-split", "train"]) == 1
    assert "ratio range" in capsys.readouterr().err
