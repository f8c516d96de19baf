"""The public datasets as they ship: tiny copies of Pascal VOC 2012, Cityscapes, ADE20K, CamVid (SegNet), DRIVE,
Carvana and Oxford-IIIT Pet, made from real photos with masks in each dataset's own encoding, sharded with no flags
and read back by both loaders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.cli.train import main as train_main
from fastseg.sets import load_manifest
from fastseg.loading import make_loader
from fastseg.shards.datasets import (
    ADE20K_NAMES,
    CAMVID_CLASSES,
    CAMVID_VOID,
    CITYSCAPES_CLASSES,
    VOC_NAMES,
    voc_color,
)

from .conftest import save, shared

SIZE = (64, 48)  # width, height of every copied photo


def photos(count: int) -> list[Image.Image]:
    davis = sorted((shared("davis2016_subset") / "images").glob("*.jpg"))
    return [Image.open(path).convert("RGB").resize(SIZE) for path in davis[:: len(davis) // count][:count]]


def thirds(left: int, middle: int, right: int) -> np.ndarray:
    """A mask with one source value in each third of the width."""
    mask = np.empty(SIZE[::-1], np.uint8)
    third = SIZE[0] // 3
    mask[:, :third], mask[:, third : 2 * third], mask[:, 2 * third :] = left, middle, right
    return mask


def read_back(shards, split: str) -> dict[str, dict[str, list]]:
    """Both loaders' masks of a split, in the same (manifest) order, per backend."""
    found = {}
    for backend in ("dali", "torch"):
        loader = make_loader(shards, split=split, backend=backend, batch_size=2, augment="none", shuffle=False,
                             workers=0, return_keys=True)
        batches = list(loader)
        found[backend] = {"keys": [k for b in batches for k in b["key"][: b["real"]]],
                          "masks": [m for b in batches for m in b["mask"][: b["real"]]]}
    assert found["dali"]["keys"] == found["torch"]["keys"]
    for a, b in zip(found["dali"]["masks"], found["torch"]["masks"]):
        assert torch.equal(a, b)
    return found["dali"]


def assert_thirds(mask: torch.Tensor, left: int, middle: int, right: int) -> None:
    third = SIZE[0] // 3
    assert (mask[:, :third] == left).all() and (mask[:, third : 2 * third] == middle).all()
    assert (mask[:, 2 * third :] == right).all()


def shard_cli(capsys, *argv) -> tuple[int, str, str]:
    code = run_cli("fastseg-shard", shard_main, [str(a) for a in [*argv, "--workers", "2", "--quiet"]])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- Pascal VOC 2012 ---------------------------------------------------------------------------------------------
def make_voc(root, train=("2007_000032", "2007_000039", "2007_000063"), val=("2007_000033", "2007_000042"),
             test=("2008_000001",)):
    palette = [v for i in range(256) for v in voc_color(i)]
    for photo, name in zip(photos(len(train) + len(val) + len(test)), [*train, *val, *test]):
        save(photo, root / "JPEGImages" / f"{name}.jpg", quality=95)
        if name in test:
            continue  # VOC's test release has no masks
        mask = Image.fromarray(thirds(0, 15, 255), "P")  # background | person | the 255 object border
        mask.putpalette(palette)
        save(mask, root / "SegmentationClass" / f"{name}.png")
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, names in (("train", train), ("val", val), ("trainval", train + val), ("test", test)):
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def test_pascal_voc_as_it_ships(tmp_path, capsys):
    voc = make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    code, out, err = shard_cli(capsys, voc, tmp_path / "shards")
    assert code == 0, err
    assert "recognised Pascal VOC 2012: train 3, val 2; 21 classes" in out
    assert "skipping the test split: no masks" in out
    manifest = load_manifest(tmp_path / "shards")
    assert {s: manifest.splits[s].samples for s in manifest.splits} == {"train": 3, "val": 2}  # the lists, not 10%
    assert [c.name for c in manifest.classes] == VOC_NAMES
    assert manifest.classes[15].color == [192, 128, 128] and manifest.classes[1].color == [128, 0, 0]
    masks = read_back(tmp_path / "shards", "val")
    assert sorted(read_back(tmp_path / "shards", "train")["keys"]) == ["2007_000032", "2007_000039", "2007_000063"]
    for mask in masks["masks"]:
        assert_thirds(mask, 0, 15, 255)  # ids as they are; the border stays ignore

    # fastseg-train runs on it out of the box, and metrics.json names VOC's classes
    out_dir = tmp_path / "run"
    assert run_cli("fastseg-train", train_main, [
        "--shards", str(tmp_path / "shards"), "--out", str(out_dir), "--epochs", "1", "--width", "4",
        "--batch-size", "2", "--accelerator", "cpu", "--workers", "1", "--log-every", "1"]) == 0
    assert list(json.loads((out_dir / "metrics.json").read_text())["per_class_iou"]) == VOC_NAMES

    # also found from VOCdevkit/, one level up
    assert shard_cli(capsys, tmp_path / "VOCdevkit", tmp_path / "again")[0] == 0


def test_a_half_copied_voc_names_the_missing_files(tmp_path, capsys):
    voc = make_voc(tmp_path / "VOC2012")
    (voc / "JPEGImages" / "2007_000039.jpg").unlink()
    (voc / "JPEGImages" / "2007_000063.jpg").unlink()
    code, _, err = shard_cli(capsys, voc, tmp_path / "shards")
    assert code == 1 and "2 image(s) listed in" in err and "train.txt missing" in err
    assert "2007_000039.jpg" in err and "2007_000063.jpg" in err and not (tmp_path / "shards").exists()


# --- Cityscapes --------------------------------------------------------------------------------------------------
def make_cityscapes(root):
    layout = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
    pictures = iter(photos(6))
    for split, cities in layout.items():
        for city, count in cities.items():
            for n in range(count):
                stem = f"{city}_{n:06d}_000019"
                save(next(pictures), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                if split == "test":
                    continue
                labels = root / "gtFine" / split / city
                # road (7) | car (26) | parking (9), which is not one of the 19 training classes
                save(thirds(7, 26, 9), labels / f"{stem}_gtFine_labelIds.png")
                save(thirds(33, 33, 33), labels / f"{stem}_gtFine_instanceIds.png")  # never to be read as masks
                save(np.zeros((*SIZE[::-1], 3), np.uint8), labels / f"{stem}_gtFine_color.png")
                (labels / f"{stem}_gtFine_polygons.json").write_text("{}")
    return root


def test_cityscapes_as_it_ships(tmp_path, capsys):
    city = make_cityscapes(tmp_path / "cityscapes")
    code, out, err = shard_cli(capsys, city, tmp_path / "shards")
    assert code == 0, err
    assert "recognised Cityscapes (gtFine, 19 training classes): train 3, val 2; 19 classes" in out
    assert "skipping the test split: no masks" in out
    manifest = load_manifest(tmp_path / "shards")
    assert {s: manifest.splits[s].samples for s in manifest.splits} == {"train": 3, "val": 2}
    assert [c.name for c in manifest.classes] == [name for _, name, _ in CITYSCAPES_CLASSES]
    assert manifest.classes[13].name == "car" and manifest.classes[13].color == [0, 0, 142]
    found = read_back(tmp_path / "shards", "train")
    assert sorted(found["keys"]) == ["train_aachen_aachen_000000_000019", "train_aachen_aachen_000001_000019",
                                     "train_bochum_bochum_000000_000019"]
    for mask in found["masks"]:
        assert_thirds(mask, 0, 13, 255)  # labelIds → trainIds; an id outside the 19 → ignore


def test_a_city_without_its_gtfine_twin_is_named(tmp_path, capsys):
    city = make_cityscapes(tmp_path / "cityscapes")
    for path in (city / "gtFine" / "train" / "bochum").iterdir():
        path.unlink()
    (city / "gtFine" / "train" / "bochum").rmdir()
    code, _, err = shard_cli(capsys, city, tmp_path / "shards")
    assert code == 1 and "1 gtFine labelIds mask(s) of" in err
    assert "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png" in err


# --- ADE20K ------------------------------------------------------------------------------------------------------
def make_ade20k(root):
    pictures = iter(photos(5))
    for folder, count in (("training", 3), ("validation", 2)):
        for n in range(1, count + 1):
            stem = f"ADE_{'train' if folder == 'training' else 'val'}_{n:08d}"
            save(next(pictures), root / "images" / folder / f"{stem}.jpg", quality=95)
            save(thirds(0, 1, 150), root / "annotations" / folder / f"{stem}.png")  # other | wall | flag
    return root


def test_ade20k_as_it_ships(tmp_path, capsys):
    ade = make_ade20k(tmp_path / "ADEChallengeData2016")
    code, out, err = shard_cli(capsys, ade, tmp_path / "shards")
    assert code == 0, err
    assert "recognised ADE20K (SceneParsing, 150 classes): train 3, val 2; 150 classes" in out
    manifest = load_manifest(tmp_path / "shards")
    assert {s: manifest.splits[s].samples for s in manifest.splits} == {"train": 3, "val": 2}
    assert [c.name for c in manifest.classes] == ADE20K_NAMES and manifest.num_classes == 150
    for mask in read_back(tmp_path / "shards", "val")["masks"]:
        assert_thirds(mask, 255, 0, 149)  # 0 ("other") → ignore, 1..150 → 0..149

    code, out, err = shard_cli(capsys, ade, tmp_path / "kept", "--keep-zero-label")
    assert code == 0, err
    manifest = load_manifest(tmp_path / "kept")
    assert manifest.num_classes == 151 and manifest.classes[0].name == "other" and manifest.classes[150].name == "flag"
    for mask in read_back(tmp_path / "kept", "val")["masks"]:
        assert_thirds(mask, 0, 1, 150)


def test_the_generic_layout_error_names_the_folders(tmp_path, capsys):
    save(np.zeros((8, 8, 3), np.uint8), tmp_path / "imgs" / "a.jpg")
    save(np.zeros((8, 8), np.uint8), tmp_path / "labels" / "b.png")
    code, _, err = shard_cli(capsys, "--images", tmp_path / "imgs", "--masks", tmp_path / "labels",
                             tmp_path / "shards", "--skip-unpaired")
    assert code == 1 and f"{tmp_path / 'imgs'} and {tmp_path / 'labels'}" in err and " .:" not in err


# --- CamVid as SegNet ships it -----------------------------------------------------------------------------------
def test_camvid_as_segnet_ships_it(tmp_path, capsys):
    root = tmp_path / "CamVid"
    pictures = iter(photos(5))
    for split, count in (("train", 3), ("val", 2)):
        for n in range(count):
            save(next(pictures), root / split / f"0001TP_{n:06d}.png")
            save(thirds(0, 8, CAMVID_VOID), root / f"{split}annot" / f"0001TP_{n:06d}.png")  # sky | car | void
    code, out, err = shard_cli(capsys, root, tmp_path / "shards")
    assert code == 0, err
    assert "recognised CamVid (SegNet's 11 classes): train 3, val 2; 11 classes" in out
    manifest = load_manifest(tmp_path / "shards")
    assert [c.name for c in manifest.classes] == [name for name, _ in CAMVID_CLASSES]
    for mask in read_back(tmp_path / "shards", "val")["masks"]:
        assert_thirds(mask, 0, 8, 255)
    # the class file kept for the rearranged copy in ../shared says the same as the built-in table
    assert json.loads((Path(__file__).parents[1] / "tools" / "classes" / "camvid.json").read_text()) == [
        {"name": name, "color": color} for name, color in CAMVID_CLASSES]


# --- DRIVE (retinal vessels) -------------------------------------------------------------------------------------
def test_drive_as_it_ships(tmp_path, capsys):
    root = tmp_path / "DRIVE"
    pictures = iter(photos(5))
    for n in (21, 22, 23):
        save(next(pictures), root / "training" / "images" / f"{n}_training.tif")
        save(thirds(0, 255, 0), root / "training" / "1st_manual" / f"{n}_manual1.gif")
        save(np.full(SIZE[::-1], 255, np.uint8), root / "training" / "mask" / f"{n}_training_mask.gif")  # FOV
    for n in (1, 2):
        save(next(pictures), root / "test" / "images" / f"{n:02d}_test.tif")  # no 1st_manual: withheld
    code, out, err = shard_cli(capsys, root, tmp_path / "shards", "--val-fraction", "0")
    assert code == 0, err
    assert "recognised DRIVE-style retinal vessels (vessel / background): train 3; 2 classes" in out
    assert "skipping the test split: no manual masks" in out
    manifest = load_manifest(tmp_path / "shards")
    assert [c.name for c in manifest.classes] == ["background", "foreground"]
    found = read_back(tmp_path / "shards", "train")
    assert sorted(found["keys"]) == ["21_training", "22_training", "23_training"]
    for mask in found["masks"]:
        assert_thirds(mask, 0, 1, 0)  # the GIF's white vessels → 1; the FOV masks never read


# --- Carvana -----------------------------------------------------------------------------------------------------
def two_colour_gif(mask: np.ndarray, path, colours=((0, 0, 0), (255, 255, 255))) -> None:
    """A palette GIF of a binary mask (index 1 where mask is set), as Carvana ships its masks."""
    image = Image.fromarray((mask > 0).astype(np.uint8), "P")
    image.putpalette([v for c in colours for v in c] + [0] * (768 - 3 * len(colours)))
    save(image, path)


def test_carvana_as_it_ships(tmp_path, capsys):
    root = tmp_path / "carvana"
    pictures = iter(photos(5))
    for n in range(4):
        save(next(pictures), root / "train" / f"00087a6bd4dc_{n + 1:02d}.jpg", quality=95)
        two_colour_gif(thirds(0, 1, 1), root / "train_masks" / f"00087a6bd4dc_{n + 1:02d}_mask.gif")
    save(next(pictures), root / "test" / "0004d4463b50_01.jpg")
    code, out, err = shard_cli(capsys, root, tmp_path / "shards", "--val-fraction", "0.25")
    assert code == 0, err
    assert "recognised Carvana (car / background): all 4; 2 classes" in out and "skipping the test split" in out
    manifest = load_manifest(tmp_path / "shards")
    assert {s: manifest.splits[s].samples for s in manifest.splits} == {"train": 3, "val": 1}
    for mask in read_back(tmp_path / "shards", "train")["masks"]:
        assert_thirds(mask, 0, 1, 1)


# --- Oxford-IIIT Pet ---------------------------------------------------------------------------------------------
def test_oxford_pet_trimaps_as_they_ship(tmp_path, capsys):
    root = tmp_path / "oxford-iiit-pet"
    names = ["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2"]
    for picture, name in zip(photos(4), names):
        save(picture, root / "images" / f"{name}.jpg", quality=95)
        save(thirds(2, 1, 3), root / "annotations" / "trimaps" / f"{name}.png")  # background | pet | border
        (root / "annotations" / "trimaps" / f"._{name}.png").write_bytes(b"\0\5\26\7")  # macOS litter, as shipped
    (root / "images" / "Abyssinian_1.mat").write_bytes(b"MATLAB")
    (root / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_1 2 2 1\nbeagle_2 2 2 1\n")
    (root / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\n")
    code, out, err = shard_cli(capsys, root, tmp_path / "shards", "--val-fraction", "0")
    assert code == 0, err
    assert "recognised Oxford-IIIT Pet (trimaps: pet / background, border ignored): train 3, test 1" in out
    manifest = load_manifest(tmp_path / "shards")
    assert [c.name for c in manifest.classes] == ["background", "pet"]
    found = read_back(tmp_path / "shards", "test")
    assert found["keys"] == ["Abyssinian_2"]
    assert_thirds(found["masks"][0], 0, 1, 255)


def test_an_unknown_layout_lists_the_layouts_tried_and_the_flags(tmp_path, capsys):
    save(np.zeros((8, 8, 3), np.uint8), tmp_path / "data" / "photos" / "a.jpg")
    code, _, err = shard_cli(capsys, tmp_path / "data", tmp_path / "shards")
    assert code == 1 and "no layout found" in err
    assert "Carvana (train/, train_masks/)" in err and "SRC/images + SRC/masks" in err
    assert "--images DIR --masks DIR" in err and "--pair-key REGEX" in err
