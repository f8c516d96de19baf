"""Decode only what the crop keeps (loading/windows.py): the region a window needs, the loaders decoding it alone
with the same batches as a whole decode, the GPU graph's own window path (run here with CPU operators), and the
mmseg crop statistics against MMSegmentation's RandomCrop."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fastseg.loading import make_loader, recipe
from fastseg.loading.windows import Region, inside, region
from fastseg.pictures import image_region
from fastseg.shards import ShardOptions, shard

from .conftest import make_dataset, save, shared

BACKENDS = ["dali", "torch"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The same 10 textured 96×128 pictures as a JPEG set, a PNG set and a raw set."""
    root = tmp_path_factory.mktemp("windows")
    found = {}
    for ext, store in (("jpg", "source"), ("png", "fast-png"), ("png", "raw")):
        data = make_dataset(root / f"data-{ext}", count=10, size=(128, 96), image_ext=ext, mask="index", classes=3)
        found[store] = shard(data, root / f"shards-{store}", ShardOptions(val_fraction=0, progress=False, workers=1,
                                                                          store=store)) and root / f"shards-{store}"
    return found


def test_the_region_holds_every_pixel_resampling_reads():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3)).astype(np.uint8)
    for _ in range(40):
        top, left = rng.uniform(0, 40), rng.uniform(0, 60)
        bottom, right = top + rng.uniform(5, 50), left + rng.uniform(5, 60)
        out = (int(rng.integers(8, 80)), int(rng.integers(8, 80)))
        flipped = (bottom, right, top, left) if rng.uniform() < 0.5 else (top, left, bottom, right)
        box = region(flipped, image.shape[:2], out)
        assert box.factor == 1 and 0 <= box.top < box.bottom <= 90 and 0 <= box.left < box.right <= 120
        cut = image[box.top:box.bottom, box.left:box.right]
        # OpenCV's bilinear (the mmseg recipe): exactly the pixels of the whole image's resample
        assert np.array_equal(recipe.resample_window(cut, inside(flipped, box), out),
                              recipe.resample_window(image, flipped, out))
        # Pillow's antialiased bilinear (the crop job): the same up to the float rounding of a shifted box
        t, l, b, r = inside((top, left, bottom, right), box)
        ours = np.array(Image.fromarray(cut).resize(out[::-1], Image.BILINEAR, box=(l, t, r, b), reducing_gap=None))
        whole = np.array(Image.fromarray(image).resize(out[::-1], Image.BILINEAR, box=(left, top, right, bottom),
                                                       reducing_gap=None))
        assert np.abs(ours.astype(int) - whole).max() <= 1
    # a reduced scale only for a JPEG, and only where the window shrinks that much along both axes
    assert region((0, 0, 400, 800), (480, 854), (100, 200), reducible=True).factor == 4
    assert region((0, 0, 400, 800), (480, 854), (100, 390), reducible=True).factor == 2
    assert region((0, 0, 400, 800), (480, 854), (300, 200), reducible=True).factor == 1
    assert region((0, 0, 400, 800), (480, 854), (100, 200)).factor == 1
    assert region((0, 0, 480, 854), (480, 854), (60, 100), reducible=True) == Region(0, 0, 60, 107, 8)


def test_a_jpeg_region_is_the_whole_decode_cut(tmp_path):
    from fastseg.pictures import decode_image

    path = save(make_picture(), tmp_path / "p.jpg", quality=90)
    data = path.read_bytes()
    whole = decode_image(data)
    box = Region(13, 37, 71, 101)
    assert np.array_equal(image_region(data, None, box), whole[13:71, 37:101])  # region decoding: the same bytes
    half = image_region(data, None, Region(0, 0, 48, 64, 2))  # DCT scaling: the image at half its size
    assert half.shape == (48, 64, 3)
    assert np.abs(half.astype(float) - cv2.resize(whole, (64, 48), interpolation=cv2.INTER_AREA)).mean() < 3
    with pytest.raises(Exception):
        image_region(data[:200], None, box)  # a cut-short JPEG fails (and the sample layer names it)


def make_picture() -> np.ndarray:
    y, x = np.mgrid[0:96, 0:128]
    return np.stack([x * 2, y * 2, x + y], -1).astype(np.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("store", ["source", "fast-png", "raw"])
@pytest.mark.parametrize("augment", ["crop", "mmseg"])
def test_window_decoding_gives_the_batches_of_a_whole_decode(sets, backend, store, augment):
    options = dict(backend=backend, batch_size=4, augment=augment, workers=0 if backend == "torch" else 1,
                   return_keys=True, seed=5, vflip=True)
    options.update(size=(64, 80)) if augment == "crop" else options.update(size=(48, 48), ratio_range=(1.0, 2.0))
    windowed = list(make_loader(sets[store], **options))
    whole = list(make_loader(sets[store], window_decode=False, **options))
    assert len(windowed) == len(whole) == 3
    for a, b in zip(windowed, whole):
        assert a["key"] == b["key"]
        assert torch.equal(a["mask"], b["mask"])
        # the same pixels (up to the float rounding of a shifted resampling box: a level here and there)
        assert float((a["image"] - b["image"]).abs().max()) * 60 < 1.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reduced_scale_stays_within_resampling_tolerance(sets, backend):
    """crop to a quarter of the size: the window shrinks 2x or more, so a JPEG is decoded at 1/2 (or less)."""
    options = dict(backend=backend, batch_size=5, augment="crop", size=(24, 32), workers=0 if backend == "torch" else 1,
                   seed=2, scale=(0.9, 1.0))
    windowed = list(make_loader(sets["source"], **options))
    whole = list(make_loader(sets["source"], window_decode=False, **options))
    for a, b in zip(windowed, whole):
        assert torch.equal(a["mask"], b["mask"])
        difference = (a["image"] - b["image"]).abs() * 60  # about grey levels (the set's std is near 60)
        assert 0 < float(difference.mean()) < 2.5  # another decode (so the path was taken), the same picture


def test_dali_and_torch_agree_sample_for_sample_with_windows(sets):
    for augment, size in (("crop", (64, 80)), ("mmseg", (48, 48))):
        options = dict(batch_size=4, augment=augment, size=size, return_keys=True, seed=9)
        for a, b in zip(make_loader(sets["source"], backend="dali", workers=1, **options),
                        make_loader(sets["source"], backend="torch", workers=0, **options)):
            assert a["key"] == b["key"] and torch.equal(a["mask"], b["mask"])
            torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("augment", ["crop", "mmseg"])
def test_the_device_graph_decodes_the_feeds_regions(sets, augment, monkeypatch):
    """On a GPU the graph decodes each region (image_slice) and resamples it; the same graph built with CPU operators
    (what a GPU runs with `mixed`) gives the CPU path's batches up to DALI's float resampling."""
    from fastseg.loading import feed

    options = dict(backend="dali", batch_size=4, augment=augment, workers=1, return_keys=True, seed=3,
                   size=(64, 80) if augment == "crop" else (48, 48))
    in_feed = list(make_loader(sets["source"], **options))
    monkeypatch.setattr(feed, "executed_in_feed", lambda plan: False)
    in_graph = list(make_loader(sets["source"], **options))
    for a, b in zip(in_feed, in_graph):
        assert a["key"] == b["key"]
        assert float((a["mask"] == b["mask"]).float().mean()) > 0.995  # nearest neighbour at float edges
        assert float((a["image"] - b["image"]).abs().mean()) * 60 < 1.0


def test_the_recipe_keeps_mmsegmentations_crop_statistics():
    """On DAVIS's masks, RandomResize + RandomCrop(512, cat_max_ratio=0.75): the share of crops one class fills
    beyond 0.75 and the share of padded pixels, ours (recipe.crop_geometry from the draws) against a line-for-line
    copy of MMSegmentation 1.x's RandomCrop.crop_bbox with numpy's own random numbers."""
    from fastseg.loading.config import LoaderConfig
    from fastseg.loading.jobs import sample_draws

    masks = [(np.array(Image.open(path)) > 127).astype(np.uint8)
             for path in sorted((shared("davis2016_subset") / "masks").glob("*.png"))]
    config = LoaderConfig(augment="mmseg", base_size=(480, 854), size=(512, 512), seed=1)
    rng = np.random.default_rng(7)
    ours, theirs = [], []
    for n in range(300):
        mask = masks[n % len(masks)]
        draws = sample_draws(config, 0, n)
        labels, _ = recipe.crop_geometry(mask, draws, config.base_size, config.size, config.cat_max_ratio)
        ours.append(crop_stats(labels, (512, 512)))
        ratio = rng.uniform(0.5, 2.0)
        size = recipe.resized_size(480, 854, (480, 854), ratio)
        resized = cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)  # mmcv.imresize(..., 'nearest')
        theirs.append(crop_stats(mmseg_random_crop(resized, (512, 512), 0.75, rng), (512, 512)))
    ours, theirs = np.array(ours), np.array(theirs)
    assert 0.2 < theirs[:, 0].mean() < 0.9  # DAVIS's small foregrounds: many crops are mostly background
    assert abs(ours[:, 0].mean() - theirs[:, 0].mean()) < 0.05
    assert abs(ours[:, 1].mean() - theirs[:, 1].mean()) < 0.05


def crop_stats(labels: np.ndarray, crop: tuple[int, int]) -> tuple[float, float]:
    """(one class above 0.75 of the crop's pixels, the share of the padded crop that is padding)."""
    counts = np.bincount(labels.ravel(), minlength=2)
    return float(counts.max() / counts.sum() >= 0.75), 1 - labels.size / (crop[0] * crop[1])


def mmseg_random_crop(seg: np.ndarray, crop: tuple[int, int], cat_max_ratio: float, rng) -> np.ndarray:
    """mmseg/datasets/transforms/transforms.py RandomCrop.crop_bbox + crop, for a mask alone (ignore index 255)."""
    def generate_crop_bbox():
        margin_h, margin_w = max(seg.shape[0] - crop[0], 0), max(seg.shape[1] - crop[1], 0)
        offset_h, offset_w = rng.integers(0, margin_h + 1), rng.integers(0, margin_w + 1)
        return offset_h, offset_h + crop[0], offset_w, offset_w + crop[1]

    bbox = generate_crop_bbox()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            y1, y2, x1, x2 = bbox
            counts = np.bincount(seg[y1:y2, x1:x2].ravel(), minlength=256)  # np.unique's counts, without the sort
            cnt = counts[:255][counts[:255] > 0]
            if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < cat_max_ratio:
                break
            bbox = generate_crop_bbox()
    y1, y2, x1, x2 = bbox
    return seg[y1:y2, x1:x2]


def test_opencv_enlarges_as_pillow_does():
    """The crop job enlarges a window with OpenCV (job_crop's CPU executor) and shrinks with Pillow's antialiased bilinear:
    where nothing shrinks the two are one filter, up to OpenCV's fixed-point rounding."""
    image = np.random.default_rng(3).integers(0, 256, (60, 80, 3)).astype(np.uint8)
    for (top, left, bottom, right), out in (((5.3, 7.1, 45.2, 70.4), (64, 96)), ((0, 0, 60, 80), (60, 80)),
                                            ((10.5, 0.0, 30.0, 17.25), (41, 33))):
        opencv = recipe.resample_window(image, (top, left, bottom, right), out)
        pillow = np.array(Image.fromarray(image).resize(out[::-1], Image.BILINEAR, box=(left, top, right, bottom),
                                                        reducing_gap=None))
        assert np.abs(opencv.astype(int) - pillow).max() <= 1
