"""The GPU path: `mixed` (nvJPEG) decoding and GPU augmentation keep the batch contract. Skipped without CUDA."""
from __future__ import annotations

import pytest
import torch

from fastseg.loading import make_loader
from fastseg.shards import ShardOptions, shard

from .conftest import make_dataset

pytestmark = pytest.mark.cuda  # skipped without CUDA, failed with FASTSEG_REQUIRE_CUDA=1 (conftest.py)


@pytest.fixture(scope="module")
def jpeg_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    make_dataset(root / "data", count=9, size=(64, 48))
    shard(root / "data", root / "shards", ShardOptions(val_fraction=0, progress=False, workers=2))
    return root / "shards"


def test_mixed_decoding_matches_the_torch_loader_on_the_cpu(jpeg_shards):
    gpu = list(make_loader(jpeg_shards, backend="dali", batch_size=4, augment=False, device="cuda", return_keys=True,
                           workers=2))
    cpu = list(make_loader(jpeg_shards, backend="torch", batch_size=4, augment=False, device="cpu", return_keys=True,
                           workers=2))
    assert len(gpu) == len(cpu) == 3
    for a, b in zip(gpu, cpu):
        assert a["image"].is_cuda and a["mask"].is_cuda and a["mask"].dtype == torch.int64
        assert a["key"] == b["key"]
        torch.testing.assert_close(a["mask"].cpu(), b["mask"], rtol=0, atol=0)
        assert ((a["image"].cpu() - b["image"]).abs() * 50).mean() < 3  # nvJPEG vs libjpeg-turbo rounding


def test_a_held_batch_survives_the_next_runs(jpeg_shards):
    # the pipeline runs on torch's stream and hands out zero-copy views: a batch still held while DALI produces the
    # next ones (and prefetches more) must keep its values
    loader = make_loader(jpeg_shards, backend="dali", batch_size=2, augment="flip", device="cuda", workers=2,
                         channels_last=True)
    batches = iter(loader)
    held = next(batches)
    copy = {k: held[k].clone() for k in ("image", "mask")}
    later = [next(batches), next(batches)]
    torch.cuda.synchronize()
    for k in ("image", "mask"):
        assert torch.equal(held[k], copy[k])
    assert held["image"].is_contiguous(memory_format=torch.channels_last) and later[1]["image"].is_cuda


def test_gpu_augmentation_keeps_classes_and_counts(jpeg_shards):
    loader = make_loader(jpeg_shards, backend="dali", batch_size=4, size=(32, 32), augment="crop", vflip=True,
                         device="cuda", return_keys=True, workers=2)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert set(torch.cat([b["mask"].unique() for b in batches]).tolist()) <= {0, 1, 255}
        keys = [k for b in batches for k, m in zip(b["key"], b["mask"]) if not (m == 255).all()]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == 9


def test_fastseg_train_on_the_gpu_with_its_fast_defaults(jpeg_shards, tmp_path):
    import json

    from fastseg.cli import run_cli
    from fastseg.cli.train import main as train_main

    out = tmp_path / "run"
    assert run_cli("fastseg-train", train_main, ["--shards", str(jpeg_shards), "--out", str(out), "--epochs", "2",
                                                 "--width", "8", "--batch-size", "4", "--image-size", "48", "64",
                                                 "--workers", "2", "--val-split", "train"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["precision"], config["channels_last"], config["accelerator"]) == ("16-mixed", True, "gpu")
    report = json.loads((out / "metrics.json").read_text())
    assert 0 <= report["val_miou"] <= 1
    throughput = report["throughput"]
    assert [e["images"] for e in throughput["per_epoch"]] == [9, 9]  # 9 real samples; the 3 padded do not count
    assert [e["steps"] for e in throughput["per_epoch"]] == [3, 3]
    assert all(0 <= e["data_stall"] <= 1 for e in throughput["per_epoch"])
    if throughput["peak_flops"]:  # a GPU whose peak is known (H100, H200, A100, ...): unrounded, so never 0.0
        assert 0 < throughput["mfu"] < 1


@pytest.mark.parametrize("store", ["auto", "raw"])
def test_raw_images_go_to_the_gpu_undecoded_and_load_as_on_the_cpu(tmp_path, store):
    """A PNG set stored as pixels (auto: raw images, PNG masks; raw: both): the GPU pipeline reshapes each image
    and moves it to the device, no decode, and its batches equal the torch loader's on the CPU."""
    make_dataset(tmp_path / "data", count=6, size=(64, 48), image_ext="png", mask="index", classes=3)
    shard(tmp_path / "data", tmp_path / "shards", ShardOptions(val_fraction=0, progress=False, workers=2, store=store))
    options = {"batch_size": 3, "augment": "none", "shuffle": False, "return_keys": True, "workers": 2}
    gpu = list(make_loader(tmp_path / "shards", backend="dali", device="cuda", **options))
    cpu = list(make_loader(tmp_path / "shards", backend="torch", device="cpu", **options))
    assert len(gpu) == len(cpu) == 2
    for a, b in zip(gpu, cpu):
        assert a["image"].is_cuda and a["mask"].is_cuda and a["key"] == b["key"]
        assert torch.equal(a["mask"].cpu(), b["mask"])
        torch.testing.assert_close(a["image"].cpu(), b["image"], rtol=0, atol=1e-4)  # normalized on either side


@pytest.mark.parametrize("augment", ["crop", "mmseg"])
def test_mixed_region_decoding_gives_the_whole_decodes_and_the_cpus_batches(jpeg_shards, augment):
    """nvJPEG decoding each crop's region alone (image_slice, mixed) against the same loader decoding whole frames on
    the GPU, and against the torch loader on the CPU: the same keys, masks and (within decoder rounding) images."""
    options = dict(batch_size=4, augment=augment, size=(32, 40) if augment == "crop" else (24, 24), return_keys=True,
                   workers=2, seed=1, vflip=True)
    windowed = list(make_loader(jpeg_shards, backend="dali", device="cuda", **options))
    whole = list(make_loader(jpeg_shards, backend="dali", device="cuda", window_decode=False, **options))
    cpu = list(make_loader(jpeg_shards, backend="torch", device="cpu", **options))
    assert len(windowed) == len(whole) == len(cpu) == 3
    for a, w, c in zip(windowed, whole, cpu):
        assert a["key"] == w["key"] == c["key"] and a["image"].is_cuda
        assert torch.equal(a["mask"], w["mask"])
        assert float((a["mask"].cpu() == c["mask"]).float().mean()) > 0.99  # nearest neighbour at float edges
        assert ((a["image"] - w["image"]).abs() * 50).mean() < 1  # the region is the whole decode, cut
        assert ((a["image"].cpu() - c["image"]).abs() * 50).mean() < 3  # nvJPEG + DALI's resize vs the CPU's
