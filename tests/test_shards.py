"""fastseg-shard: layouts, conversions, safety and read-back through webdataset and DALI."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.errors import FastsegError
from fastseg.format import format_index, parse_index
from fastseg.sets import load_manifest
from fastseg.shards import ShardOptions, shard, verify

from .conftest import disk_mask, make_dataset, save, shared, textured

QUIET = dict(progress=False, workers=2)


def read_back(out, split="train"):
    """All samples of a split through webdataset's own reader: {key: sample}."""
    manifest = load_manifest(out)
    urls = [str(out / s.name) for s in manifest.splits[split].shards]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def pixels_of(sample, kind: str) -> np.ndarray:
    """A read-back sample's image or mask pixels, however its set stores them (raw or encoded)."""
    from fastseg.format import RAW_IMAGE_EXT, RAW_MASK_EXT, RAW_SIZE_EXT
    from fastseg.loading import member_pixels

    raw = {"image": RAW_IMAGE_EXT, "mask": RAW_MASK_EXT}[kind]
    if raw in sample:  # a grey image stored as one channel is widened to three, as the loaders widen it
        return member_pixels(sample[raw], sample[RAW_SIZE_EXT], 3 if kind == "image" else 1)
    return decode(sample[next(k for k in sample if k.startswith(kind + "."))])


def cli(argv, capsys):
    code = run_cli("fastseg-shard", shard_main, [str(a) for a in argv] + ["--quiet", "--workers", "2"])
    return code, capsys.readouterr().err


def test_jpeg_binary_roundtrip_with_rollover(tmp_path):
    src = make_dataset(tmp_path / "data", count=10)
    manifest = shard(src, tmp_path / "out", ShardOptions(max_count=2, val_fraction=0.2, **QUIET))
    assert manifest.splits["train"].samples == 8 and manifest.splits["val"].samples == 2
    assert len(manifest.splits["train"].shards) == 4  # max_count 2 → shards roll over
    assert [c.name for c in manifest.classes] == ["background", "foreground"]
    samples = {**read_back(tmp_path / "out"), **read_back(tmp_path / "out", "val")}
    assert len(samples) == 10
    for key, sample in samples.items():
        source = src / "images" / f"{key}.jpg"
        assert sample["image.jpg"] == source.read_bytes()  # JPEG bytes stored as they are
        expected = (np.asarray(Image.open(src / "masks" / f"{key}.png")) > 0).astype(np.uint8)
        np.testing.assert_array_equal(decode(sample["mask.png"]), expected)
        meta = json.loads(sample["json"])
        assert meta["image"] == str(source) and (meta["width"], meta["height"]) == (40, 32)
    assert 0 < manifest.mean[0] < 255 and all(s > 0 for s in manifest.std)


def test_index_matches_dalis_wds2idx(tmp_path):
    from wds2idx import IndexCreator

    src = make_dataset(tmp_path / "data", count=5)
    shard(src, tmp_path / "out", ShardOptions(val_fraction=0, **QUIET))
    tar = tmp_path / "out" / "train-000000.tar"
    with IndexCreator(str(tar), str(tmp_path / "ref.idx"), verbose=False) as creator:
        creator.create_index()
    assert (tmp_path / "out" / "train-000000.idx").read_text() == (tmp_path / "ref.idx").read_text()
    samples = parse_index((tmp_path / "ref.idx").read_text(), "ref")
    assert format_index(samples) == (tmp_path / "ref.idx").read_text()


def test_dali_reader_reads_the_shards_on_cpu(tmp_path):
    from nvidia.dali import fn, pipeline_def, types

    src = make_dataset(tmp_path / "data", count=4, image_ext="png", mask="index", classes=3)
    out = tmp_path / "out"
    shard(src, out, ShardOptions(val_fraction=0, store="source", **QUIET))  # PNG bytes, which DALI decodes

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        image, mask, meta = fn.readers.webdataset(
            paths=[str(out / "train-000000.tar")], index_paths=[str(out / "train-000000.idx")],
            ext=["image.jpg;image.png", "mask.png", "json"])
        return fn.decoders.image(image, device="cpu"), fn.decoders.image(mask, output_type=types.GRAY), meta

    p = pipe()
    p.build()
    images, masks, metas = p.run()
    for i in range(4):
        key = json.loads(bytes(np.array(metas[i])).decode())["key"]
        np.testing.assert_array_equal(np.array(images[i]), np.asarray(Image.open(src / "images" / f"{key}.png")))
        np.testing.assert_array_equal(np.array(masks[i])[..., 0], np.asarray(Image.open(src / "masks" / f"{key}.png")))


def test_palette_and_index_masks(tmp_path):
    src = make_dataset(tmp_path / "pal", count=4, mask="palette", classes=4)
    manifest = shard(src, tmp_path / "out", ShardOptions(val_fraction=0, **QUIET))
    assert manifest.num_classes == 4 and manifest.classes[1].color == [200, 0, 0]
    for key, sample in read_back(tmp_path / "out").items():
        np.testing.assert_array_equal(decode(sample["mask.png"]), np.asarray(Image.open(src / "masks" / f"{key}.png")))


def test_rgb_colour_masks_with_a_class_file(tmp_path):
    colors = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for i in range(3):
        save(textured(24, 16, i), tmp_path / "data/images" / f"a{i}.png")
        save(np.array(colors, np.uint8)[disk_mask(24, 16, i, 3)], tmp_path / "data/masks" / f"a{i}.png")
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([{"name": n, "color": c} for n, c in zip(["bg", "red", "blue"], colors)]))
    shard(tmp_path / "data", tmp_path / "out", ShardOptions(classes=classes, val_fraction=0, **QUIET))
    for key, sample in read_back(tmp_path / "out").items():
        np.testing.assert_array_equal(decode(sample["mask.png"]), disk_mask(24, 16, int(key[1:]), 3))
    # without the class file the colours are discovered and listed, black first
    manifest = shard(tmp_path / "data", tmp_path / "out2", ShardOptions(val_fraction=0, **QUIET))
    assert [c.color for c in manifest.classes] == sorted(colors)
    # a colour the class file lacks is an error naming the file and the colour
    save(np.full((16, 24, 3), [0, 255, 0], np.uint8), tmp_path / "data/masks/a1.png")
    with pytest.raises(FastsegError, match=r"a1\.png: colours \(0, 255, 0\) are not in the class table"):
        shard(tmp_path / "data", tmp_path / "out3", ShardOptions(classes=classes, val_fraction=0, **QUIET))
    assert not (tmp_path / "out3").exists()


def test_unknown_values_against_a_class_file(tmp_path):
    src = make_dataset(tmp_path / "data", count=3, mask="index", classes=4)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([{"name": n} for n in ("a", "b", "c")]))
    with pytest.raises(FastsegError, match=r"values 3 are not among the 3 classes"):
        shard(src, tmp_path / "out", ShardOptions(classes=classes, **QUIET))


def test_ignore_value_becomes_255(tmp_path):
    src = make_dataset(tmp_path / "data", count=3, mask="index", classes=4)
    manifest = shard(src, tmp_path / "out", ShardOptions(ignore_value=3, val_fraction=0, **QUIET))
    assert manifest.num_classes == 3
    for key, sample in read_back(tmp_path / "out").items():
        source = np.asarray(Image.open(src / "masks" / f"{key}.png"))
        np.testing.assert_array_equal(decode(sample["mask.png"]), np.where(source == 3, 255, source))


def test_grayscale_cmyk_bmp_and_exif_rotated_images(tmp_path):
    data = tmp_path / "data"
    rgb = textured(30, 20, 1)
    save(rgb[..., 0], data / "images/gray.png")
    save(Image.fromarray(rgb).convert("CMYK"), data / "images/cmyk.jpg", quality=95)
    save(rgb, data / "images/bitmap.bmp")
    # a photo taken sideways: pixels stored rotated, with EXIF orientation 6 (rotate 90° clockwise to view)
    exif = Image.Exif()
    exif[0x0112] = 6
    save(Image.fromarray(rgb).transpose(Image.ROTATE_90), data / "images/phone.jpg", exif=exif, quality=95)
    for name in ("gray", "cmyk", "bitmap", "phone"):
        save(disk_mask(30, 20, 1) * 255, data / f"masks/{name}.png")
    shard(data, tmp_path / "out", ShardOptions(val_fraction=0, **QUIET))
    samples = read_back(tmp_path / "out")
    assert samples["gray"]["image.png"] == (data / "images/gray.png").read_bytes()
    assert "image.png" in samples["cmyk"] and decode(samples["cmyk"]["image.png"]).shape == (20, 30, 3)
    np.testing.assert_array_equal(decode(samples["bitmap"]["image.png"]), rgb)  # lossless conversion
    upright = decode(samples["phone"]["image.png"])
    assert upright.shape == (20, 30, 3)  # stored upright, lined up with its 30x20 mask
    error = np.abs(upright.astype(int) - rgb).mean()
    assert error < 12 and error * 4 < np.abs(upright.astype(int) - rgb[::-1, ::-1]).mean()  # noise, not a turn


def test_mask_suffixes_split_folders_and_ab_layout(tmp_path):
    for split in ("train", "val"):
        make_dataset(tmp_path / "splits" / split, count=3)
    assert set(shard(tmp_path / "splits", tmp_path / "o1", ShardOptions(**QUIET)).splits) == {"train", "val"}
    for folder, ext in (("trainA", "jpg"), ("testA", "jpg")):
        make_dataset(tmp_path / "ab_src", count=2)
        (tmp_path / "ab").mkdir(exist_ok=True)
        (tmp_path / "ab_src/images").rename(tmp_path / "ab" / folder)
        (tmp_path / "ab_src/masks").rename(tmp_path / "ab" / folder.replace("A", "B"))
    splits = shard(tmp_path / "ab", tmp_path / "o2", ShardOptions(**QUIET)).splits
    assert set(splits) == {"train", "val", "test"} and splits["test"].samples == 2  # val carved out of train
    make_dataset(tmp_path / "suffix", count=3)
    for mask in (tmp_path / "suffix/masks").iterdir():
        mask.rename(mask.with_name(mask.stem + "_mask.png"))
    assert shard(tmp_path / "suffix", tmp_path / "o3", ShardOptions(val_fraction=0, **QUIET)).splits["train"].samples == 3


def test_val_split_is_seeded(tmp_path):
    src = make_dataset(tmp_path / "data", count=20)
    keys = []
    for run in range(2):
        shard(src, tmp_path / f"o{run}", ShardOptions(val_fraction=0.25, seed=7, **QUIET))
        keys.append(sorted(read_back(tmp_path / f"o{run}", "val")))
    assert keys[0] == keys[1] and len(keys[0]) == 5


def test_size_mismatch_lists_pairs_unless_resizing(tmp_path, capsys):
    src = make_dataset(tmp_path / "data", count=3)
    save(disk_mask(20, 16, 0) * 255, src / "masks/s000.png")
    code, err = cli([src, tmp_path / "out"], capsys)
    assert code == 1 and "s000.jpg is 40x32 but" in err and "s000.png is 20x16" in err and "--resize-masks" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    shard(src, tmp_path / "out", ShardOptions(resize_masks=True, val_fraction=0, **QUIET))
    mask = decode(read_back(tmp_path / "out")["s000"]["mask.png"])
    assert mask.shape == (32, 40) and set(np.unique(mask)) <= {0, 1}  # nearest neighbour: no new values


def test_corrupt_image_is_named_and_nothing_is_written(tmp_path, capsys):
    src = make_dataset(tmp_path / "data", count=4)
    data = (src / "images/s002.jpg").read_bytes()
    (src / "images/s002.jpg").write_bytes(data[: len(data) // 2])
    code, err = cli([src, tmp_path / "out"], capsys)
    assert code == 1 and "s002.jpg: cannot decode the image" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_bad_inputs_have_clear_messages(tmp_path, capsys):
    code, err = cli([tmp_path / "missing", tmp_path / "out"], capsys)
    assert code == 1 and "missing: no such folder" in err
    (tmp_path / "empty/images").mkdir(parents=True)
    (tmp_path / "empty/masks").mkdir()
    code, err = cli([tmp_path / "empty", tmp_path / "out"], capsys)
    assert code == 1 and "no images" in err
    src = make_dataset(tmp_path / "data", count=4)
    (src / "masks/s001.png").unlink()
    code, err = cli([src, tmp_path / "out"], capsys)
    assert code == 1 and "1 file(s) without a partner" in err and "s001.jpg" in err and "--skip-unpaired" in err
    assert cli([src, tmp_path / "out", "--skip-unpaired"], capsys)[0] == 0
    code, err = cli([src, tmp_path / "out", "--skip-unpaired"], capsys)
    assert code == 1 and "already exists; pass --overwrite" in err
    assert cli([src, tmp_path / "out", "--skip-unpaired", "--overwrite"], capsys)[0] == 0
    (tmp_path / "notshards").mkdir()
    (tmp_path / "notshards/thesis.tex").write_text("precious")
    code, err = cli([src, tmp_path / "notshards", "--skip-unpaired", "--overwrite"], capsys)
    assert code == 1 and "not a fastseg shard set" in err and (tmp_path / "notshards/thesis.tex").exists()


def test_overwrite_replaces_only_a_shard_set(tmp_path, capsys):
    src = make_dataset(tmp_path / "data", count=4)
    # a stray .tar beside a user's file is not a shard set: refused, nothing deleted
    mine = tmp_path / "mine"
    save(textured(8, 8, 0), mine / "photo.png")
    (mine / "backup.tar").write_bytes(b"a user's archive")
    code, err = cli([src, mine, "--overwrite"], capsys)
    assert code == 1 and "not a fastseg shard set (no manifest.json)" in err and "backup.tar, photo.png" in err
    assert sorted(p.name for p in mine.iterdir()) == ["backup.tar", "photo.png"]
    # a shard set with a user's file added to it: refused too, naming the file
    out = tmp_path / "out"
    assert cli([src, out], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, err = cli([src, out, "--overwrite"], capsys)
    assert code == 1 and "also notes.txt, which fastseg did not write" in err and (out / "notes.txt").exists()
    # a shard set alone, or an empty folder, is replaced
    (out / "notes.txt").unlink()
    assert cli([src, out, "--overwrite"], capsys)[0] == 0
    (tmp_path / "empty").mkdir()
    assert cli([src, tmp_path / "empty", "--overwrite"], capsys)[0] == 0 and load_manifest(tmp_path / "empty")


KILLED_MID_SWAP = """
import os, sys
from pathlib import Path
from fastseg.shards import ShardOptions, shard, verify

renames = []
real_rename = Path.rename
def rename(self, target):  # the process dies between moving the old set aside and moving the new one in
    renames.append(target)
    if len(renames) == 2:
        os._exit(9)
    return real_rename(self, target)
Path.rename = rename
shard(Path(sys.argv[1]), Path(sys.argv[2]), ShardOptions(val_fraction=0, progress=False, workers=1, overwrite=True))
"""


def test_a_kill_between_the_swap_renames_loses_no_set(tmp_path, capsys):
    old_src, new_src = make_dataset(tmp_path / "old", count=4), make_dataset(tmp_path / "new", count=6)
    out = tmp_path / "out"
    shard(old_src, out, ShardOptions(val_fraction=0, **QUIET))
    before = (out / "manifest.json").read_text()
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_SWAP, str(new_src), str(out)], timeout=120)
    assert killed.returncode == 9 and not out.exists() and list(tmp_path.glob(".out.old-*"))
    # the next run puts the old set back before anything else: it is whole, and still needs --overwrite
    code, err = cli([new_src, out], capsys)
    assert code == 1 and "already exists; pass --overwrite" in err
    assert (out / "manifest.json").read_text() == before and not list(tmp_path.glob(".out.*"))
    assert cli(["--verify", out], capsys)[0] == 0
    assert cli([new_src, out, "--overwrite", "--val-fraction", "0"], capsys)[0] == 0
    assert load_manifest(out).splits["train"].samples == 6


def test_verify_finds_a_damaged_shard(tmp_path, capsys):
    src = make_dataset(tmp_path / "data", count=4)
    out = tmp_path / "out"
    shard(src, out, ShardOptions(val_fraction=0, **QUIET))
    assert cli(["--verify", out], capsys)[0] == 0
    tar = out / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # inside the first image's bytes
    tar.write_bytes(bytes(data))
    code, err = cli(["--verify", out], capsys)
    assert code == 1 and "train-000000.tar: sha256 does not match the manifest" in err


def test_verify_checks_every_index_entry(tmp_path, capsys):
    src = make_dataset(tmp_path / "data", count=4)
    out = tmp_path / "out"
    manifest = shard(src, out, ShardOptions(val_fraction=0, **QUIET))
    assert manifest.splits["train"].shards[0].index_sha256  # new sets record their indexes' sha256
    index = out / "train-000000.idx"
    samples = parse_index(index.read_text(), str(index))
    ext, offset, size, name = samples[2][0]
    samples[2][0] = (ext, offset + 512, size, name)  # one member's offset shifted by a tar block
    index.write_text(format_index(samples))
    code, err = cli(["--verify", out], capsys)
    assert code == 1 and "train-000000.idx: sha256 does not match the manifest" in err
    assert f"{name} at offset {offset + 512} size {size}, the tar has offset {offset} size {size}" in err
    # the same shift in a set whose manifest has no index sha256 (written before it did) is still caught
    raw = json.loads((out / "manifest.json").read_text())
    del raw["splits"]["train"]["shards"][0]["index_sha256"]
    (out / "manifest.json").write_text(json.dumps(raw))
    code, err = cli(["--verify", out], capsys)
    assert code == 1 and "sha256" not in err and f"{name} at offset {offset + 512}" in err


def test_killed_run_leaves_no_output_that_looks_finished(tmp_path):
    src = make_dataset(tmp_path / "data", count=300, size=(320, 240), image_ext="png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "fastseg.cli.shard", str(src), str(out), "--workers", "1",
                             "--quiet"], start_new_session=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.partial-*/train-000000.tar")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(FastsegError, match="no such shard folder"):
        load_manifest(out)
    partial = next(tmp_path.glob(".out.partial-*"))
    with pytest.raises(FastsegError, match="unfinished fastseg-shard run"):
        load_manifest(partial)

    # the next run to the same OUT sweeps what the dead writer left, but never a folder still being written
    small = make_dataset(tmp_path / "small", count=4, size=(32, 24))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".out.partial-{alive.pid}"
        (live / "train-000000.tar").parent.mkdir()
        (live / "train-000000.tar").write_bytes(b"being written")
        result = subprocess.run([sys.executable, "-m", "fastseg.cli.shard", str(small), str(out), "--workers", "1",
                                 "--quiet"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"removed {partial}" in result.stdout
        assert not partial.exists() and live.exists() and load_manifest(out).splits["train"].samples
    finally:
        alive.kill()


def test_real_davis_and_camvid(tmp_path, capsys):
    davis = shared("davis2016_subset")
    manifest = shard(davis, tmp_path / "davis", ShardOptions(max_count=40, **QUIET))
    assert manifest.splits["train"].samples + manifest.splits["val"].samples == 100
    # frames of two videos carved at random: said, with the flag that keeps each video in one split
    assert "numbered frames of 2 sequences" in capsys.readouterr().out
    grouped = shard(davis, tmp_path / "grouped", ShardOptions(group_by=r"^(.*)_\d+$", **QUIET))
    videos = {split: {key.rpartition("_")[0] for key in read_back(tmp_path / "grouped", split)} for split in
              ("train", "val")}
    assert len(videos["val"]) == 1 and not videos["train"] & videos["val"]  # no video in both splits
    assert grouped.splits["val"].samples == 40  # car-shadow whole: 10% of 100 frames, in whole videos, is at least 40
    said = capsys.readouterr().out
    assert "--group-by: val holds 1 of 2 groups" in said and "numbered frames" not in said
    assert manifest.sizes["train"] == [[854, 480]]
    for key, sample in read_back(tmp_path / "davis", "val").items():
        assert sample["image.jpg"] == (davis / "images" / f"{key}.jpg").read_bytes()
        assert set(np.unique(decode(sample["mask.png"]))) <= {0, 1}
    camvid = shared("camvid")
    classes = __import__("pathlib").Path(__file__).parents[1] / "tools/classes/camvid.json"
    manifest = shard(camvid, tmp_path / "camvid", ShardOptions(classes=classes, ignore_value=11, **QUIET))
    assert (manifest.splits["train"].samples, manifest.splits["val"].samples) == (367, 101)
    assert manifest.num_classes == 11 and manifest.class_pixels["road"] > manifest.class_pixels["bicyclist"]


def test_mask_png_is_a_plain_grayscale_png():
    # the sharder's own mask encoder: what Pillow (torch loader) and DALI's decoder read back, value for value
    from fastseg.shards.encode import encode_mask_png

    indices = np.random.default_rng(0).integers(0, 256, (7, 13), dtype=np.uint8)
    indices[:, :4] = 255  # runs, as label maps have
    decoded = Image.open(io.BytesIO(encode_mask_png(indices)))
    assert decoded.mode == "L" and decoded.size == (13, 7)
    assert np.array_equal(np.asarray(decoded), indices)


# --- flags for the sets that ship otherwise (issue: more datasets as they ship) -----------------------------------
def jpeg_masks(root, count=3, size=(48, 32)):
    """Kvasir-SEG's way: binary masks saved as (RGB) JPEG, so edges hold dozens of grey levels."""
    for i in range(count):
        save(textured(*size, i), root / "images" / f"cju{i}.jpg", quality=90)
        save(np.repeat(disk_mask(*size, i)[..., None] * 255, 3, axis=2).astype(np.uint8),
             root / "masks" / f"cju{i}.jpg", quality=75)
    return root


def test_mask_threshold_binarizes_lossy_masks_and_is_suggested(tmp_path, capsys):
    src = jpeg_masks(tmp_path / "kvasir")
    code, err = cli([src, tmp_path / "refused"], capsys)
    assert code == 1 and "a mask saved as JPEG" in err and "--mask-threshold 128" in err
    assert not (tmp_path / "refused").exists()
    manifest = shard(src, tmp_path / "out", ShardOptions(mask_threshold=128, val_fraction=0, **QUIET))
    assert [c.name for c in manifest.classes] == ["background", "foreground"]
    for key, sample in read_back(tmp_path / "out").items():
        stored = decode(sample["mask.png"])
        truth = disk_mask(48, 32, int(key[3:]))
        assert set(np.unique(stored)) <= {0, 1} and (stored == truth).mean() > 0.97  # JPEG moves a few edge pixels
    # anti-aliased PNG masks (a large mask scaled down smoothly) are named for what they are, with the same fix
    for i in range(3):
        sharp = Image.fromarray((disk_mask(192, 128, i) * 255).astype(np.uint8))
        (src / "masks" / f"cju{i}.jpg").unlink()
        save(sharp.resize((48, 32), Image.BILINEAR), src / "masks" / f"cju{i}.png")
    code, err = cli([src, tmp_path / "smooth"], capsys)
    assert code == 1 and "anti-aliased binary masks" in err and "--mask-threshold 128" in err
    assert cli([src, tmp_path / "smooth", "--mask-threshold", "0"], capsys)[1].count("from 1 to 255") == 1
    assert cli([src, tmp_path / "smooth", "--mask-threshold", "128"], capsys)[0] == 0


def test_pair_key_pairs_stems_that_differ(tmp_path, capsys):
    for n in (21, 22, 23):
        save(textured(24, 16, n), tmp_path / "images" / f"{n}_training.tif")
        save((disk_mask(24, 16, n) * 255).astype(np.uint8), tmp_path / "manual" / f"{n}_manual1.gif")
    argv = ["--images", tmp_path / "images", "--masks", tmp_path / "manual", tmp_path / "out", "--val-fraction", "0"]
    code, err = cli(argv, capsys)
    assert code == 1 and "--pair-key REGEX" in err  # the stems differ: nothing pairs, and the fix is named
    code, err = cli([*argv, "--pair-key", r"^(\d+)_"], capsys)
    assert code == 0, err
    samples = read_back(tmp_path / "out")
    assert sorted(samples) == ["21_training", "22_training", "23_training"]  # keys from the image names
    for key, sample in samples.items():
        np.testing.assert_array_equal(decode(sample["mask.png"]), disk_mask(24, 16, int(key[:2])))
        # TIFF → pixels (--store auto: a set without JPEG files keeps its images raw), lossless
        np.testing.assert_array_equal(pixels_of(sample, "image"), textured(24, 16, int(key[:2])))
    # two masks with one key, and a pattern without a group, are errors that say so
    save(np.zeros((16, 24), np.uint8), tmp_path / "manual" / "21_manual2.gif")
    code, err = cli([*argv, "--pair-key", r"^(\d+)_", "--overwrite"], capsys)
    assert code == 1 and "gives two masks the key '21'" in err and "21_manual2.gif" in err
    code, err = cli([*argv, "--pair-key", r"^\d+_", "--overwrite"], capsys)
    assert code == 1 and "has no group" in err
    code, err = cli([*argv, "--pair-key", r"^(\d+_", "--overwrite"], capsys)
    assert code == 1 and "is not a regular expression" in err


def test_map_values_applies_a_value_table(tmp_path, capsys):
    for i in range(3):  # Oxford-IIIT Pet's trimaps: 1 pet, 2 background, 3 border
        save(textured(24, 16, i), tmp_path / "data" / "images" / f"p{i}.jpg")
        save((disk_mask(24, 16, i, 3) + 1).astype(np.uint8), tmp_path / "data" / "masks" / f"p{i}.png")
    argv = [tmp_path / "data", tmp_path / "out", "--val-fraction", "0"]
    assert cli([*argv, "--map-values", "1:1,2:0,3:255"], capsys)[0] == 0
    manifest = load_manifest(tmp_path / "out")
    assert [c.name for c in manifest.classes] == ["background", "foreground"]
    for key, sample in read_back(tmp_path / "out").items():
        source = disk_mask(24, 16, int(key[1:]), 3) + 1
        np.testing.assert_array_equal(decode(sample["mask.png"]), np.choose(source, [0, 1, 0, 255]))
    code, err = cli([*argv, "--map-values", "1:1,2:0", "--overwrite"], capsys)
    assert code == 1 and "values 3 are not in --map-values" in err and "p0.png" in err
    for bad, message in (("1-1", "is not SRC:DST"), ("1:1,1:0", "mapped twice"), ("300:1", "0..255")):
        assert message in cli([*argv, "--map-values", bad, "--overwrite"], capsys)[1]
    code, err = cli([*argv, "--map-values", "1:1", "--ignore-value", "2", "--overwrite"], capsys)
    assert code == 1 and "give one of them" in err


def test_wide_and_multi_frame_files_are_refused_by_name(tmp_path, capsys):
    make_dataset(tmp_path / "data", count=3)
    wide = tmp_path / "data" / "images" / "s001.tif"
    Image.fromarray(np.full((32, 40), 40000, np.uint16)).save(wide)
    (tmp_path / "data" / "images" / "s001.jpg").unlink()
    code, err = cli([tmp_path / "data", tmp_path / "out"], capsys)
    assert code == 1 and "s001.tif: a 16-bit image" in err and not (tmp_path / "out").exists()
    wide.unlink()
    save(textured(40, 32, 1), tmp_path / "data" / "images" / "s001.jpg")
    frames = [Image.fromarray((disk_mask(40, 32, s) * 255).astype(np.uint8)) for s in (1, 2)]
    (tmp_path / "data" / "masks" / "s001.png").unlink()
    frames[0].save(tmp_path / "data" / "masks" / "s001.gif", save_all=True, append_images=frames[1:])
    code, err = cli([tmp_path / "data", tmp_path / "out"], capsys)
    assert code == 1 and "s001.gif: 2 frames" in err


def test_two_colour_palette_masks_are_background_and_foreground(tmp_path):
    for i in range(3):  # the palette lists white first: the dark colour is the background all the same
        save(textured(24, 16, i), tmp_path / "data" / "images" / f"c{i}.jpg")
        mask = Image.fromarray(np.where(disk_mask(24, 16, i) > 0, 0, 1).astype(np.uint8), "P")
        mask.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
        save(mask, tmp_path / "data" / "masks" / f"c{i}.gif")
    manifest = shard(tmp_path / "data", tmp_path / "out", ShardOptions(val_fraction=0, **QUIET))
    assert [(c.name, c.color) for c in manifest.classes] == [("background", [0, 0, 0]),
                                                              ("foreground", [255, 255, 255])]
    for key, sample in read_back(tmp_path / "out").items():
        np.testing.assert_array_equal(decode(sample["mask.png"]), disk_mask(24, 16, int(key[1:])))


def test_isic_masks_pair_by_the_segmentation_suffix(tmp_path):
    for i in range(3):  # ISIC 2018: ISIC_0000000.jpg beside ISIC_0000000_segmentation.png
        save(textured(24, 16, i), tmp_path / "isic" / "images" / f"ISIC_000000{i}.jpg")
        save((disk_mask(24, 16, i) * 255).astype(np.uint8), tmp_path / "isic" / "masks" / f"ISIC_000000{i}_segmentation.png")
    shard(tmp_path / "isic", tmp_path / "out", ShardOptions(val_fraction=0, **QUIET))
    assert sorted(read_back(tmp_path / "out")) == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]


def test_fast_png_storage_keeps_every_pixel_and_says_so(tmp_path):
    from fastseg.loading import make_loader

    src = make_dataset(tmp_path / "data", count=4, image_ext="png")
    save(np.asarray(Image.open(src / "images/s000.png").convert("L")), src / "images/s000.png")  # a grey PNG too
    save(textured(40, 32, 9), tmp_path / "data/images/s009.jpg", quality=90)
    save((disk_mask(40, 32, 9) * 255).astype(np.uint8), tmp_path / "data/masks/s009.png")
    manifest = shard(src, tmp_path / "fast", ShardOptions(val_fraction=0, store="fast-png", **QUIET))
    assert manifest.storage == {"image": "fast-png", "mask": "fast-png"}
    samples = read_back(tmp_path / "fast")
    assert samples["s009"]["image.jpg"] == (src / "images/s009.jpg").read_bytes()  # JPEG: never re-encoded
    from fastseg.shards.encode import encode_fast_png

    for key in ("s000", "s001"):  # grey and RGB
        source = np.asarray(Image.open(src / "images" / f"{key}.png"))
        stored = samples[key]["image.png"]
        assert stored == encode_fast_png(source, level=3) != (src / "images" / f"{key}.png").read_bytes()
        np.testing.assert_array_equal(decode(stored), source)
    shard(src, tmp_path / "source", ShardOptions(val_fraction=0, **QUIET))
    for backend in ("dali", "torch"):  # what a loader returns does not depend on the storage
        fast, plain = (next(iter(make_loader(tmp_path / name, backend=backend, batch_size=5, augment="none",
                                             shuffle=False, workers=0, return_keys=True)))
                       for name in ("fast", "source"))
        assert fast["key"] == plain["key"] and torch.equal(fast["image"], plain["image"])
    assert verify(tmp_path / "fast", progress=False) == []
    # a set written before the storage field loads, and says what it is
    raw = json.loads((tmp_path / "source/manifest.json").read_text())
    del raw["storage"]
    (tmp_path / "source/manifest.json").write_text(json.dumps(raw))
    assert load_manifest(tmp_path / "source").storage == {"image": "source", "mask": "fast-png"}


def test_auto_storage_keeps_jpeg_sets_as_they_are_and_lossless_images_as_pixels(tmp_path, capsys):
    from fastseg.cli import run_cli
    from fastseg.cli.shard import main as shard_main
    from fastseg.format import MASK_EXT, RAW_IMAGE_EXT, RAW_MASK_EXT, RAW_SIZE_EXT
    from fastseg.loading import make_loader

    src = make_dataset(tmp_path / "png", count=5, size=(40, 32), image_ext="png", mask="index", classes=3)
    save(np.asarray(Image.open(src / "images/s000.png").convert("L")), src / "images/s000.png")  # a grey PNG too
    manifest = shard(src, tmp_path / "auto", ShardOptions(val_fraction=0, **QUIET))  # auto: the default
    assert manifest.storage == {"image": "raw", "mask": "fast-png", "grey": "one-channel"}
    grey = read_back(tmp_path / "auto")["s000"]
    assert len(grey[RAW_IMAGE_EXT]) == 40 * 32  # the grey image as one channel: a third of the bytes
    assert "MB (images raw, masks fast-png)" in capsys.readouterr().out  # the summary says what auto chose
    for key, sample in read_back(tmp_path / "auto").items():  # raw images, PNG masks, the size beside them
        assert {RAW_IMAGE_EXT, MASK_EXT, RAW_SIZE_EXT} <= set(sample) and RAW_MASK_EXT not in sample
        np.testing.assert_array_equal(pixels_of(sample, "image"),
                                      np.asarray(Image.open(src / "images" / f"{key}.png").convert("RGB")))
        np.testing.assert_array_equal(decode(sample[MASK_EXT]), np.asarray(Image.open(src / "masks" / f"{key}.png")))
    shard(src, tmp_path / "source", ShardOptions(val_fraction=0, store="source", **QUIET))
    for backend in ("dali", "torch"):  # what a loader returns does not depend on the storage, shuffled or not
        for options in ({"augment": "none", "shuffle": False}, {"augment": "flip", "shuffle": True, "seed": 3}):
            auto, plain = (next(iter(make_loader(tmp_path / name, backend=backend, batch_size=5, workers=0,
                                                 return_keys=True, **options)))
                           for name in ("auto", "source"))
            assert auto["key"] == plain["key"] and torch.equal(auto["mask"], plain["mask"])
            torch.testing.assert_close(auto["image"], plain["image"], rtol=0, atol=1e-5)
    assert verify(tmp_path / "auto", progress=False) == []
    # a sample whose PNG mask went missing is named by --verify, not read as if it were raw
    (tmp_path / "cut").mkdir()
    with tarfile.open(tmp_path / "auto/train-000000.tar") as whole, \
            tarfile.open(tmp_path / "cut/train-000000.tar", "w", format=tarfile.USTAR_FORMAT) as cut:
        for member in whole.getmembers():
            if member.name != f"s001.{MASK_EXT}":
                cut.addfile(member, whole.extractfile(member))
    (tmp_path / "auto/train-000000.tar").write_bytes((tmp_path / "cut/train-000000.tar").read_bytes())
    assert any("s001: incomplete sample" in p for p in verify(tmp_path / "auto", progress=False))
    # a JPEG set keeps its bytes; JPEG data behind a .png name is refused with the fix, nothing written
    jpeg = make_dataset(tmp_path / "jpeg", count=3, size=(40, 32), image_ext="jpg")
    assert shard(jpeg, tmp_path / "jpeg-out", ShardOptions(val_fraction=0, **QUIET)).storage == {
        "image": "source", "mask": "fast-png"}
    assert read_back(tmp_path / "jpeg-out")["s000"]["image.jpg"] == (jpeg / "images/s000.jpg").read_bytes()
    (src / "images/s001.png").write_bytes((jpeg / "images/s001.jpg").read_bytes())
    assert run_cli("fastseg-shard", shard_main, [str(src), str(tmp_path / "nope"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "s001.png: JPEG data in a file not named .jpg" in err and "rename the file .jpg" in err
    assert not (tmp_path / "nope").exists()


def test_raw_storage_loads_every_pixel_without_a_decode_and_verify_checks_sizes(tmp_path, capsys):
    from fastseg.cli import run_cli
    from fastseg.cli.shard import main as shard_main
    from fastseg.format import RAW_IMAGE_EXT, RAW_MASK_EXT, RAW_SIZE_EXT, parse_index, sha256_file
    from fastseg.loading import make_loader

    src = make_dataset(tmp_path / "data", count=5, size=(40, 32), image_ext="png", mask="index", classes=3)
    save(np.asarray(Image.open(src / "images/s000.png").convert("L")), src / "images/s000.png")  # a grey PNG too
    manifest = shard(src, tmp_path / "raw", ShardOptions(val_fraction=0, store="raw", **QUIET))
    assert manifest.storage == {"image": "raw", "mask": "raw", "grey": "one-channel"}
    samples = read_back(tmp_path / "raw")
    for key, channels in (("s000", 1), ("s001", 3)):  # the grey image as one channel, widened by the loaders
        assert set(samples[key]) >= {RAW_IMAGE_EXT, RAW_MASK_EXT, RAW_SIZE_EXT}
        assert len(samples[key][RAW_IMAGE_EXT]) == 32 * 40 * channels and len(samples[key][RAW_MASK_EXT]) == 32 * 40
    shard(src, tmp_path / "source", ShardOptions(val_fraction=0, **QUIET))
    for backend in ("dali", "torch"):  # pixel for pixel what the source PNGs hold, shuffled or not, cropped too
        for options in ({"augment": "none", "shuffle": False}, {"augment": "crop", "shuffle": True, "seed": 3}):
            raw, plain = (next(iter(make_loader(tmp_path / name, backend=backend, batch_size=5, workers=0,
                                                size=(32, 40), return_keys=True, **options)))
                          for name in ("raw", "source"))
            assert raw["key"] == plain["key"] and torch.equal(raw["mask"], plain["mask"])
            torch.testing.assert_close(raw["image"], plain["image"], rtol=0, atol=1e-5)
    assert verify(tmp_path / "raw", progress=False) == []
    # a raw member of the wrong size: --verify names it
    tar, index = tmp_path / "raw/train-000000.tar", tmp_path / "raw/train-000000.idx"
    _, offset, _, name = next(m for m in parse_index(index.read_text(), "idx")[1] if m[0] == RAW_SIZE_EXT)
    data = bytearray(tar.read_bytes())
    data[offset:offset + 8] = np.array([31, 40], "<i4").tobytes()  # one row short of its pixels
    tar.write_bytes(bytes(data))
    raw_manifest = json.loads((tmp_path / "raw/manifest.json").read_text())
    raw_manifest["splits"]["train"]["shards"][0]["sha256"] = sha256_file(tar)
    (tmp_path / "raw/manifest.json").write_text(json.dumps(raw_manifest))
    problems = verify(tmp_path / "raw", progress=False)
    assert len(problems) == 1 and name.partition(".")[0] in problems[0] and "31x40x3 needs 3720" in problems[0]
    # JPEG images are never stored as pixels
    save(textured(40, 32, 9), src / "images/s009.jpg", quality=90)
    save(disk_mask(40, 32, 9), src / "masks/s009.png")
    assert run_cli("fastseg-shard", shard_main, [str(src), str(tmp_path / "nope"), "--store", "raw", "--quiet"]) == 1
    assert "s009.jpg: a JPEG; --store raw" in capsys.readouterr().err and not (tmp_path / "nope").exists()


def test_group_by_carves_whole_groups_near_the_share_and_names_what_it_cannot_match():
    from pathlib import Path

    from fastseg.shards.pairs import Pair, split_off_val

    pairs = [Pair(f"{g}_{i}", Path(f"/x/{g}_{i:03d}.jpg"), Path(f"/x/{g}_{i:03d}.png"))
             for g, n in (("a", 30), ("b", 10), ("c", 10), ("d", 50)) for i in range(n)]
    splits = split_off_val({"all": pairs}, 0.2, 0, group_by=r"^(.*)_\d+$")
    groups = {split: {p.key.partition("_")[0] for p in found} for split, found in splits.items()}
    assert not groups["train"] & groups["val"] and len(splits["train"]) + len(splits["val"]) == 100
    assert abs(len(splits["val"]) - 20) <= 10  # whole groups of 10 to 50, each taken where it brings val nearer 20
    assert split_off_val({"all": pairs}, 0.2, 0)["val"] != splits["val"]  # without it, frames at random
    with pytest.raises(FastsegError, match=r"does not match /x/zz\.jpg"):
        split_off_val({"all": pairs + [Pair("zz", Path("/x/zz.jpg"), Path("/x/zz.png"))]}, 0.2, 0, r"^(.*)_\d+$")
    with pytest.raises(FastsegError, match="finds one group only"):
        split_off_val({"all": pairs[:30]}, 0.2, 0, r"^(.*)_\d+$")
    with pytest.raises(FastsegError, match="has no group"):
        split_off_val({"all": pairs}, 0.2, 0, r"^.*_\d+$")


def test_the_checks_name_duplicates_leaks_absent_classes_and_empty_masks_and_the_report_shows_them(tmp_path, capsys):
    root = tmp_path / "data"
    make_dataset(root / "train", count=8, size=(48, 40), image_ext="png", mask="index", classes=3)
    make_dataset(root / "val", count=4, size=(48, 40), image_ext="png", mask="index", classes=2, first_seed=50)
    for image in [*(root / "train/images").glob("*.png"), *(root / "val/images").glob("*.png")]:
        seed = int(image.stem[1:])  # pictures that look unlike each other: blocks of random brightness
        blocks = np.random.default_rng(seed).integers(0, 256, (5, 6, 3), dtype=np.uint8)
        save(np.asarray(Image.fromarray(blocks).resize((48, 40), Image.NEAREST)), image)
    # planted: a train image in val under another name, re-encoded (BMP: the same pixels), and another as a JPEG
    # (other bytes, other pixels, the same look); and a mask with no labelled pixel
    Image.open(root / "train/images/s003.png").save(root / "val/images/copy.bmp")
    Image.open(root / "val/masks/s050.png").save(root / "val/masks/copy.png")  # masks without class 2: none in val
    Image.open(root / "train/images/s005.png").save(root / "val/images/look.jpg", quality=80)
    Image.open(root / "val/masks/s051.png").save(root / "val/masks/look.png")
    save(np.full((40, 48), 255, np.uint8), root / "train/masks/s007.png")
    manifest = shard(root, tmp_path / "shards", ShardOptions(**QUIET))
    warnings = manifest.statistics["warnings"]
    said = capsys.readouterr().out
    assert all(f"warning: {line}" in said for line in warnings)
    assert any("in more than one split" in w and "train/s003 = val/copy" in w for w in warnings), warnings
    assert any("near-identical" in w and "train/s005 ~ val/look" in w for w in warnings), warnings
    assert not any("near-identical" in w and "val/copy" in w for w in warnings)  # said once, as the same pixels
    assert any(w.startswith("val: class(es) with no pixel: class_2") for w in warnings), warnings
    assert any("train: 1 mask(s) with no labelled pixel" in w and "s007" in w for w in warnings), warnings
    statistics = manifest.statistics
    assert statistics["images"] == {"train": 8, "val": 6}
    assert statistics["class_images"]["val"] == {"class_0": 6, "class_1": 6, "class_2": 0}
    assert statistics["class_pixels"]["train"]["class_1"] > 0
    assert load_manifest(tmp_path / "shards").statistics == statistics  # kept in the manifest, for the report

    page = (tmp_path / "shards/report.html").read_text()
    assert page.count("<img src='data:image/jpeg;base64,") == 8 + 6  # every sample of this small set, inline
    assert "train/s003 = val/copy" in page and str(tmp_path / "shards") in page and ".partial" not in page
    from fastseg.cli.report import main as report_main

    assert run_cli("fastseg-report", report_main, [str(tmp_path / "shards"), "--out", str(tmp_path / "again.html"),
                                                   "--samples", "2"]) == 0
    assert (tmp_path / "again.html").read_text().count("<img ") == 4
    check_in_a_browser(tmp_path / "shards/report.html", images=14)


def check_in_a_browser(page, images: int) -> None:
    """The page opened in a real headless Chromium (Debian's chromium-headless-shell, driven by Playwright): every
    image decoded, no console error. Skipped where either is missing."""
    import shutil

    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").sync_playwright
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium-headless-shell)")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        tab = chromium.new_page()
        errors = []
        tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(page.as_uri())
        loaded = tab.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        chromium.close()
    assert loaded == images and not errors, errors


def test_writing_and_reporting_a_set_import_no_torch(tmp_path):
    """fastseg-shard (a set written, its report included) and fastseg-report run with no torch, OpenCV, DALI or
    Lightning in sys.modules: they read sets through the torch-free set layer (fastseg/sets.py), and fastseg/shards
    imports nothing of fastseg/loading or fastseg/training (importing torch and Lightning cost every fastseg-shard
    run seconds on 2 cores)."""
    import ast

    for path in (Path(__file__).parents[1] / "fastseg" / "shards").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert not module.startswith(("..loading", "..training", "fastseg.loading", "fastseg.training")), \
                    f"{path} imports {module}"
    data = make_dataset(tmp_path / "data", count=6)
    code = ("import sys\nfrom fastseg.cli import shard, report\n"
            f"assert shard.main([{str(data)!r}, {str(tmp_path / 'shards')!r}, '--quiet', '--workers', '1']) == 0\n"
            f"assert report.main([{str(tmp_path / 'shards')!r}, '--out', {str(tmp_path / 'again.html')!r}]) == 0\n"
            "heavy = [m for m in ('torch', 'cv2', 'nvidia.dali', 'pytorch_lightning', 'lightning')"
            " if m in sys.modules]\n"
            "assert not heavy, f'imported {heavy}'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "shards" / "report.html").exists() and (tmp_path / "again.html").exists()
