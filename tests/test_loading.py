"""make_loader: one batch contract for both backends, paired augmentation, DDP slices and epoch bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastseg.errors import FastsegError
from fastseg.loading import make_loader
from fastseg.loading.torch_backend import HostBuffers
from fastseg.shards import ShardOptions, shard

from .conftest import corrupt_one_image, make_dataset, save

BACKENDS = ["dali", "torch"]
# the CPU everywhere; on a machine with CUDA also the GPU path (mixed decoding, GPU operators, GPU normalizing)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]  # conftest.py skips (or fails) without CUDA
QUIET = dict(progress=False, workers=2)
# loaders in the main process (the torch loader) or one thread (DALI) keep these tests quick; the worker-process path is
# covered where it matters (DDP slices, errors raised inside a worker) and by the training tests
INLINE = 0


@pytest.fixture(scope="module")
def png_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("png")
    make_dataset(root / "data", count=10, size=(48, 40), image_ext="png", mask="index", classes=3)
    shard(root / "data", root / "shards", ShardOptions(val_fraction=0, max_count=4, **QUIET))
    return root / "shards"


@pytest.fixture(scope="module")
def jpeg_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpeg")
    make_dataset(root / "data", count=6, size=(64, 48))
    shard(root / "data", root / "shards", ShardOptions(val_fraction=0, **QUIET))
    return root / "shards"


def epoch(loader):
    return [{k: v for k, v in b.items()} for b in loader]


def real_keys(batches):
    """Keys of the samples that are not padding (padding has an all-ignore mask)."""
    return [k for b in batches for k, m in zip(b["key"], b["mask"]) if not (m == 255).all()]


@pytest.mark.parametrize("fixture,size", [("png_shards", None), ("png_shards", (20, 24)), ("jpeg_shards", None)])
def test_backends_agree_without_augmentation(fixture, size, request):
    shards = request.getfixturevalue(fixture)
    dali, torch_batches = (epoch(make_loader(shards, backend=b, batch_size=4, size=size, augment=False, return_keys=True,
                                    workers=INLINE, shuffle=False)) for b in BACKENDS)
    assert [b["key"] for b in dali] == [b["key"] for b in torch_batches]  # same order when not shuffling
    for a, b in zip(dali, torch_batches):
        assert a["image"].dtype == torch.float32 and a["mask"].dtype == torch.int64
        assert a["image"].shape == b["image"].shape and a["image"].shape[1] == 3
        torch.testing.assert_close(a["mask"], b["mask"], rtol=0, atol=0)  # masks: exactly
        diff = (a["image"] - b["image"]).abs() * 50  # back to ~0..255 units (std is about 50 here)
        if fixture == "jpeg_shards":
            # libjpeg-turbo in DALI and in Pillow may use different IDCT/upsampling: a few levels at most
            assert diff.mean() < 2.0 and diff.max() < 40
        elif size is None:
            assert diff.max() < 1e-3  # lossless PNG at native size: identical pixels
        else:
            assert diff.mean() < 3.0  # both bilinear, implementations round differently


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment,size", [("crop", (32, 32)), ("flip", (48, 64)), ("flip", (32, 32)),
                                          ("mmseg", (32, 40)), ("rotate", (48, 64))])
@pytest.mark.parametrize("backend", BACKENDS)
def test_paired_augmentation_keeps_image_and_mask_aligned(backend, augment, size, device, tmp_path):
    # The image's red channel encodes the class of each pixel; class = position cell, so a crop, flip or
    # resize applied differently to image and mask would show up as disagreement.
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w]
    cls = (x * 3 // w + 3 * (y * 2 // h)).astype(np.uint8)  # 6 cells, asymmetric both ways
    for i in range(4):
        image = np.stack([cls * 40 + 20, y * 255 // h, np.full_like(cls, i * 50)], -1).astype(np.uint8)
        save(image, tmp_path / "data/images" / f"p{i}.png")
        save(cls, tmp_path / "data/masks" / f"p{i}.png")
    shard(tmp_path / "data", tmp_path / "shards", ShardOptions(val_fraction=0, **QUIET))
    flips = 0
    for seed in range(6):
        loader = make_loader(tmp_path / "shards", backend=backend, batch_size=4, size=size, augment=augment,
                             vflip=True, seed=seed, scale=(0.2, 1.0), workers=INLINE, device=device,
                             photometric=False)
        for batch in loader:
            red = batch["image"][:, 0] * loader.plan.manifest.std[0] + loader.plan.manifest.mean[0]
            decoded = torch.round((red - 20) / 40).long()
            mask = batch["mask"]
            if augment == "mmseg":  # padding: ignore in the mask, 0 in the normalized image
                assert (batch["image"].permute(1, 0, 2, 3)[:, mask == 255] == 0).all()
            if augment in ("mmseg", "rotate"):  # rotate: the border the rotated image leaves uncovered is ignored
                decoded, mask = decoded[mask != 255], mask[mask != 255]
            assert set(mask.unique().tolist()) <= set(range(6)), "augmentation made a new class value"
            assert (decoded == mask).float().mean() > 0.93, f"image and mask disagree (seed {seed})"
            if (augment, size) == ("flip", (h, w)):  # native size, no resampling: exactly equal
                assert torch.equal(decoded, mask)
            if augment not in ("mmseg", "rotate"):
                flips += int((mask[:, :, 0] > mask[:, :, -1]).sum())  # flipped rows have class 2 left of class 0
            else:
                flips += 1  # the flip share is checked in test_recipe.py (mmseg) and below (rotate)
        assert len(loader) == 1
    assert flips > 0  # the flips that the agreement check covers did happen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment,size", [("flip", None), ("crop", (32, 40)), ("mmseg", (32, 40)),
                                          ("rotate", (32, 40))])
def test_one_seed_draws_the_same_samples_through_both_loaders(augment, size, device, png_shards):
    """The draws are made once (loading/draws.py) and both backends only execute them: with the same seed, in the
    same epoch, DALI and the torch loader flip the same samples and cut the same windows (and colour them alike);
    pixels differ only by how each resamples. Another seed draws otherwise, so this check can fail."""
    def samples(backend, seed):
        loader = make_loader(png_shards, backend=backend, batch_size=4, size=size, augment=augment, vflip=True,
                             seed=seed, return_keys=True, workers=INLINE, device=device)
        found = {}
        for number in range(2):
            for batch in loader:
                real = batch["real"]
                for key, image, mask in zip(batch["key"][:real], batch["image"][:real].cpu(), batch["mask"][:real].cpu()):
                    found[number, key] = image * 50, mask  # images back to ~0..255 units (std is about 50 here)
        return found

    dali, torch_loader = samples("dali", 5), samples("torch", 5)
    assert dali.keys() == torch_loader.keys() and len(dali) == 20
    for where, (image, mask) in dali.items():
        other_image, other_mask = torch_loader[where]
        diff = (image - other_image).abs()
        if augment in ("crop", "rotate"):  # DALI's and Pillow's (OpenCV's) resampling of the same window (rotation)
            assert (mask == other_mask).float().mean() > 0.97, where  # 0.996 at least here; another window: 0.13
            assert diff.mean() < 2.0, where  # 0.32 at most here; another window: 11 and more
        else:  # flip: no resampling; mmseg: one geometry (recipe.py), OpenCV on the CPU, DALI's operators on a GPU
            assert torch.equal(mask, other_mask), where
            assert diff.mean() < (1e-3 if device == "cpu" else 2.0), where
    reseeded = samples("torch", 6)
    assert sum(not torch.equal(mask, reseeded[where][1]) for where, (_, mask) in torch_loader.items()) >= 8


def test_the_draws_are_a_function_of_seed_epoch_and_sample_alone():
    from fastseg.loading import LoaderConfig, draws, sample_draws

    crop = LoaderConfig(augment="crop", scale=(0.25, 0.5), vflip=True, seed=2)
    first = sample_draws(crop, 3, 7)
    assert np.array_equal(first, sample_draws(crop, 3, 7))  # made again anywhere: the same numbers
    for epoch, sample, seed in ((4, 7, 2), (3, 8, 2), (3, 7, 3)):
        assert not np.array_equal(first, sample_draws(LoaderConfig.build(crop, seed=seed), epoch, sample))
    windows = np.array([sample_draws(crop, 0, n) for n in range(400)])
    top, left, bottom, right = windows[:, draws.WINDOW].T
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 1 + 1e-6).all() and (right <= 1 + 1e-6).all()
    area = (bottom - top) * (right - left)
    assert area.min() > 0.2 and area.max() < 0.5 + 1e-6  # the scale range (clipped to the image where very long)
    assert 0.4 < windows[:, draws.HFLIP].mean() < 0.6 and 0.4 < windows[:, draws.VFLIP].mean() < 0.6
    both = next(w for w in windows if w[draws.HFLIP] and w[draws.VFLIP])
    assert np.allclose(draws.roi(both), both[[4, 5, 2, 3]])  # start and end swapped along each flipped axis
    flips_only = LoaderConfig(augment="flip")
    assert not any(sample_draws(flips_only, 0, n)[draws.VFLIP] for n in range(50))  # vflip off: never
    assert sample_draws(LoaderConfig(augment="none"), 0, 0) is None
    assert sample_draws(LoaderConfig(augment="none", original_labels=True), 0, 0) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_augmentation_flips_and_crops_with_different_draws(backend, png_shards):
    loader = make_loader(png_shards, backend=backend, batch_size=10, size=(40, 48), augment="crop", seed=3,
                         return_keys=True, workers=INLINE)
    first, second = next(iter(loader)), next(iter(loader))
    plain = next(iter(make_loader(png_shards, backend=backend, batch_size=10, augment=False, return_keys=True,
                                  workers=INLINE)))
    by_key = dict(zip(plain["key"], plain["mask"]))
    changed = [not torch.equal(m, by_key[k]) for k, m in zip(first["key"], first["mask"])]
    assert sum(changed) >= 5  # most samples were cropped or flipped
    assert first["key"] != second["key"] or not torch.equal(first["mask"], second["mask"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world", [1, 2, 3])
def test_ddp_ranks_are_disjoint_complete_and_equal(backend, world, png_shards):
    loaders = [make_loader(png_shards, backend=backend, batch_size=3, augment=True, rank=r, world_size=world,
                           return_keys=True, workers=1) for r in range(world)]
    orders = []
    for _ in range(2):
        per_rank = [epoch(loader) for loader in loaders]
        assert len({len(batches) for batches in per_rank}) == 1  # every rank takes the same number of steps
        assert all(len(batches) == len(loader) for batches, loader in zip(per_rank, loaders))
        assert all(b["image"].shape[0] == 3 for batches in per_rank for b in batches)  # never an empty batch
        keys = [real_keys(batches) for batches in per_rank]
        flat = [k for ks in keys for k in ks]
        assert len(flat) == len(set(flat)) == 10  # disjoint, and together the whole split
        orders.append(flat)
    assert orders[0] != orders[1]  # a fresh order (and, with world > 1, fresh slices) each epoch


@pytest.mark.parametrize("world", [1, 2])
def test_every_epoch_is_a_new_permutation_of_the_whole_split_in_both_backends(world, png_shards):
    """A full reshuffle, the same rule in both backends: each epoch the whole split permuted, cut into rank slices."""
    manifest_order = real_keys(epoch(make_loader(png_shards, backend="torch", batch_size=4, shuffle=False,
                                                 augment="none", return_keys=True, workers=INLINE)))
    orders = {}
    for backend in BACKENDS:
        loaders = [make_loader(png_shards, backend=backend, batch_size=3, augment="none", rank=r, world_size=world,
                               return_keys=True, workers=INLINE, seed=2) for r in range(world)]
        orders[backend] = [[real_keys(epoch(loader)) for loader in loaders] for _ in range(3)]
    assert orders["dali"] == orders["torch"]  # the same samples in the same order, rank by rank
    epochs = [[k for rank in ranks for k in rank] for ranks in orders["torch"]]
    for keys in epochs:
        assert sorted(keys) == sorted(manifest_order) and keys != manifest_order  # complete, disjoint, reordered
    assert epochs[0] != epochs[1] != epochs[2]
    if world == 2:  # not the same slice with its order changed: samples cross between the ranks
        assert set(orders["torch"][0][0]) != set(orders["torch"][1][0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_len_matches_batches_and_padding_is_ignored(backend, png_shards):
    loader = make_loader(png_shards, backend=backend, batch_size=4, augment=False, return_keys=True, workers=INLINE)
    batches = epoch(loader)
    assert len(loader) == len(batches) == 3  # 10 samples in batches of 4: the last has 2 real, 2 padding
    last = batches[-1]
    assert (last["mask"][2:] == 255).all() and not (last["mask"][:2] == 255).all()
    assert last["key"][2] == last["key"][3] == last["key"][1]  # padding repeats this rank's last sample
    assert [b["real"] for b in batches] == [4, 4, 2]  # counted on the host: no device sync to count images


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_batches_are_made_so_by_the_pipeline(backend, device, png_shards):
    def batches(channels_last):
        return epoch(make_loader(png_shards, backend=backend, batch_size=4, augment=False, device=device,
                                 workers=INLINE, channels_last=channels_last))

    for plain, fast in zip(batches(False), batches(True)):
        assert plain["image"].is_contiguous() and fast["image"].is_contiguous(memory_format=torch.channels_last)
        assert fast["image"].shape == plain["image"].shape
        torch.testing.assert_close(fast["image"], plain["image"], rtol=0, atol=1e-6)  # the same values
        assert torch.equal(fast["mask"], plain["mask"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_training_split_is_shuffled_without_augmentation(backend, png_shards):
    loader = make_loader(png_shards, backend=backend, batch_size=5, augment="none", return_keys=True, workers=INLINE)
    first, second = (real_keys(epoch(loader)) for _ in range(2))
    assert sorted(first) == sorted(second) and first != second  # a new order each epoch
    fixed = make_loader(png_shards, backend=backend, batch_size=5, augment="none", return_keys=True,
                        workers=INLINE, shuffle=False)
    once, again = real_keys(epoch(fixed)), real_keys(epoch(fixed))
    assert once == again and sorted(once) == sorted(first)  # off on request: the manifest's order every epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_epoch_left_early_does_not_shift_the_next(backend, png_shards):
    loader = make_loader(png_shards, backend=backend, batch_size=2, augment=False, return_keys=True, workers=INLINE,
                         shuffle=False)
    for batch in loader:  # like Lightning's sanity check: two batches, then leave
        break
    full = epoch(loader)
    assert len(full) == len(loader) == 5
    assert sorted(real_keys(full)) == sorted(set(real_keys(full))) and len(real_keys(full)) == 10
    assert full[0]["key"] == batch["key"]  # the new epoch starts at the beginning again


def test_bad_shard_sets_are_named(png_shards, tmp_path):
    with pytest.raises(FastsegError, match="no such shard folder"):
        make_loader(tmp_path / "nope")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished/train-000000.tar").write_bytes(b"x" * 1024)
    with pytest.raises(FastsegError, match="no manifest.json: an unfinished fastseg-shard run"):
        make_loader(tmp_path / "unfinished")
    with pytest.raises(FastsegError, match="no split 'val'.*train"):
        make_loader(png_shards, split="val")
    if not torch.cuda.is_available():
        with pytest.raises(FastsegError, match="no CUDA device is visible"):
            make_loader(png_shards, device="cuda")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in png_shards.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    tar = broken / "train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(FastsegError, match=r"train-000001.tar: sha256 does not match"):
        make_loader(broken, backend="torch")
    tar.write_bytes(bytes(data[:-512]))
    with pytest.raises(FastsegError, match=r"train-000001.tar: \d+ bytes, the manifest says"):
        make_loader(broken, backend="dali", checksums=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_sizes_need_an_output_size(backend, tmp_path):
    make_dataset(tmp_path / "data", count=3, size=(40, 32))
    make_dataset(tmp_path / "data", count=3, size=(30, 50), first_seed=3)
    shard(tmp_path / "data", tmp_path / "shards", ShardOptions(val_fraction=0, **QUIET))
    with pytest.raises(FastsegError, match="images of 2 sizes .*give an output size"):
        make_loader(tmp_path / "shards", backend=backend)
    batch = next(iter(make_loader(tmp_path / "shards", backend=backend, batch_size=6, size=(16, 24), workers=INLINE)))
    assert batch["image"].shape == (6, 3, 16, 24) and batch["mask"].shape == (6, 16, 24)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sample_that_does_not_decode_is_named(backend, jpeg_shards, tmp_path):
    key = corrupt_one_image(jpeg_shards, tmp_path)
    for augment in (False, "mmseg"):  # decoded by DALI's operators, or (the recipe on the CPU) by its feed
        with pytest.raises(FastsegError, match=f"train-000000.tar: sample {key} does not decode .*fastseg-shard "
                                               "--verify"):
            for _ in make_loader(tmp_path, backend=backend, batch_size=2, augment=augment, workers=1, size=(32, 32)):
                pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_stay_valid_while_held(backend, png_shards):
    # DALI hands over views of its own buffers; on the CPU the torch loader lends reused ones (HostBuffers): either
    # way, batch k must live on untouched while torch holds it, even through a view of part of it
    loader = make_loader(png_shards, backend=backend, batch_size=2, augment="flip", return_keys=True, workers=INLINE)
    batches = iter(loader)
    held = next(batches)
    image, mask = held["image"][1], held["mask"][1:]
    copy = {"image": image.clone(), "mask": mask.clone(), "key": held["key"]}
    del held
    later = [next(batches) for _ in range(3)]
    assert mask.dtype == torch.int64 and mask.shape == (1, 40, 48)
    assert torch.equal(image, copy["image"]) and torch.equal(mask, copy["mask"])
    assert all(b["key"] != copy["key"] for b in later)


def test_host_buffers_lend_memory_again_only_once_let_go():
    # on the CPU a fresh batch costs more in page faults than its normalization: buffers are lent again
    buffers = HostBuffers(slots=2)
    first = buffers.take((4, 3), np.float32)
    pool = [array.ctypes.data for array, _ in buffers.lent]
    start = first.data_ptr()
    part = first[1:]  # a view keeps the whole buffer lent
    del first
    second = buffers.take((4, 3), np.float32)
    assert second.data_ptr() != start and second.data_ptr() in [a.ctypes.data for a, _ in buffers.lent]
    third = buffers.take((4, 3), np.float32)  # both lent: fresh memory, not kept
    assert third.data_ptr() not in [a.ctypes.data for a, _ in buffers.lent]
    assert buffers.take((2, 3), np.float32).data_ptr() not in [a.ctypes.data for a, _ in buffers.lent]
    del part
    assert buffers.take((4, 3), np.float32).data_ptr() == start == pool[0]


def keyed(batches):
    return [(b["key"], b["mask"].clone(), b["image"].clone()) for b in batches]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment", ["flip", "crop", "mmseg"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restored_loader_continues_with_the_exact_next_batch(backend, augment, device, png_shards):
    def fresh():
        return make_loader(png_shards, backend=backend, batch_size=2, size=(40, 48), augment=augment, vflip=True,
                           device=device, rank=1, world_size=2, seed=5, return_keys=True, workers=INLINE)

    reference = fresh()
    epochs = [keyed(reference) for _ in range(3)]  # 3 batches an epoch (5 samples per rank, padded)
    first = fresh()
    keyed(first)
    batches = iter(first)
    next(batches), next(batches)  # like Lightning: one batch trained, one fetched ahead
    state = first.state(taken=1)
    assert (state["epoch"], state["position"]) == (1, 1)
    resumed = fresh()
    resumed.restore(state)
    after = keyed(resumed) + keyed(resumed)
    expected = epochs[1][1:] + epochs[2]
    assert [k for k, _, _ in after] == [k for k, _, _ in expected]
    for (_, mask, image), (_, want_mask, want_image) in zip(after, expected):
        assert torch.equal(mask, want_mask) and torch.equal(image, want_image)


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_epoch_follows_the_trainer(backend, png_shards):
    def fresh():
        return make_loader(png_shards, backend=backend, batch_size=4, rank=0, world_size=2, seed=1,
                           return_keys=True, workers=INLINE)

    reference = fresh()
    third = [keyed(reference) for _ in range(3)][2]
    jumped = fresh()
    jumped.set_epoch(2)
    assert [k for k, _, _ in keyed(jumped)] == [k for k, _, _ in third]
    if backend == "dali":  # a reader cannot go back
        with pytest.raises(FastsegError, match="cannot go back to epoch 1"):
            jumped.set_epoch(1)


def test_unknown_augmentation_is_named(png_shards):
    with pytest.raises(FastsegError, match="unknown augmentation 'elastic'; choose one of none, flip, crop, mmseg, "
                                           "rotate"):
        make_loader(png_shards, augment="elastic")


def test_the_feed_hands_each_batch_its_members_and_draws_without_dali(jpeg_shards):
    """DALI's feed (loading/feed.py) runs with no DALI imported: a batch of the second epoch holds the members of
    exactly the samples the contract orders there, and each sample's flips as draws.py draws them."""
    import subprocess
    import sys

    code = f"""
import sys
from fastseg.loading import make_loader
from fastseg.loading.draws import flips
from fastseg.loading.jobs import sample_draws
from fastseg.loading.feed import SampleFeed
plan = make_loader({str(jpeg_shards)!r}, backend="torch", batch_size=4, augment="flip", vflip=True, workers=0,
                   seed=5).plan
feed = SampleFeed(plan, start=plan.batches)  # the second epoch's first batch
images, masks, parameters = feed()
order = plan.padded_samples(1)[:4]
assert len(images) == len(order) == 4
for i, number in enumerate(order):
    path, key, members = feed.members[number]
    assert bytes(images[i]) == feed.read(path, members[plan.stored.image_in(members)]), key
    assert bytes(masks[i]) == feed.read(path, members[plan.stored.mask]), key
    assert parameters[i].tolist() == list(flips(sample_draws(plan.config, 1, number))), key
assert "nvidia.dali" not in sys.modules, "the feed imported DALI"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("device", DEVICES)
def test_rotate_turns_image_and_mask_together_and_ignores_the_uncovered_border(device, png_shards, monkeypatch):
    """augment="rotate" (loading/job_rotate.py): each sample turned by its drawn angle within ±degrees, as PIL's
    own rotate turns it (counter-clockwise for a positive angle), flipped as drawn; the border the turned image
    leaves uncovered is ignore in the mask; DALI's graph (warp_affine, what a GPU runs) and the torch loader
    (OpenCV) agree on the same seed's rotations."""
    from PIL import Image

    from fastseg.loading import feed, sample_draws
    from fastseg.loading.job_rotate import ANGLE
    from fastseg.loading.members import SampleTable

    options = dict(batch_size=5, augment="rotate", degrees=40, vflip=True, return_keys=True, seed=4, workers=INLINE,
                   device=device)
    by_torch = list(make_loader(png_shards, backend="torch", **options))
    plan = make_loader(png_shards, backend="torch", **options).plan
    numbers = {key: number for number, (_, key, _) in enumerate(SampleTable(plan).members)}  # manifest order
    source = {b_key: (image, mask) for b in make_loader(png_shards, backend="torch", batch_size=5, augment="none",
                                                        return_keys=True, workers=INLINE, device=device)
              for b_key, image, mask in zip(b["key"], b["image"], b["mask"])}
    turned = 0
    for batch in by_torch:
        for key, mask in zip(batch["key"][:batch["real"]], batch["mask"][:batch["real"]].cpu()):
            draws = sample_draws(plan.config, 0, numbers[key])
            original = source[key][1].cpu().numpy().astype(np.uint8)
            expected = np.asarray(Image.fromarray(original).rotate(float(draws[ANGLE]), resample=Image.NEAREST,
                                                                   fillcolor=255))
            expected = expected[:, ::-1] if draws[0] else expected
            expected = expected[::-1] if draws[1] else expected
            assert (mask.numpy() == expected).mean() > 0.97, key  # nearest neighbour, rounded at pixel edges
            if abs(draws[ANGLE]) > 10:  # the corners are off the turned picture: ignored, never a class
                assert {int(mask[0, 0]), int(mask[0, -1]), int(mask[-1, 0]), int(mask[-1, -1])} == {255}, key
                turned += 1
    assert turned >= 3
    dali = list(make_loader(png_shards, backend="dali", **options))  # on the CPU: the feed runs OpenCV's warp
    monkeypatch.setattr(feed, "executed_in_feed", lambda plan: False)  # the graph's warp_affine, as on a GPU
    graph = list(make_loader(png_shards, backend="dali", **options))
    for ours, theirs in ((dali, by_torch), (graph, by_torch)):
        for a, b in zip(ours, theirs):
            assert a["key"] == b["key"]
            assert float((a["mask"].cpu() == b["mask"].cpu()).float().mean()) >= 0.97
            assert float((a["image"].cpu() - b["image"].cpu()).abs().mean()) < 0.05
