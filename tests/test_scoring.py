"""Scoring at the labels' resolution: loaders hand over the original masks, validation and fastseg-predict score
against them, checked against a plain numpy computation from the label files themselves."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from fastseg.cli import run_cli
from fastseg.cli.predict import load_module
from fastseg.cli.predict import main as predict_main
from fastseg.cli.train import main as train_main
from fastseg.loading import make_loader
from fastseg.loading.config import keep_ratio_size
from fastseg.training.scoring import Scoring, slide_logits

from .conftest import disk_mask, save, textured

TRAIN = ["--width", "4", "--batch-size", "4", "--accelerator", "cpu", "--workers", "1", "--no-checksums",
         "--log-every", "1", "--image-size", "32"]
VAL_SIZES = [(48, 40), (40, 64), (72, 56), (64, 48), (50, 50)]  # (width, height): none the training size


def run(argv, main=train_main, prog="fastseg-train"):
    return run_cli(prog, main, [str(a) for a in argv])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A 3-class set whose images differ in size and exceed the training size (32×32); val masks have ignored
    borders. Returns (source folder, shards, a checkpoint trained one epoch)."""
    from fastseg.shards import ShardOptions, shard

    root = tmp_path_factory.mktemp("mixed")
    for split, count, sizes in (("train", 8, [(40, 36), (36, 48)]), ("val", 5, VAL_SIZES)):
        for i in range(count):
            width, height = sizes[i % len(sizes)]
            mask = disk_mask(width, height, i + 7, classes=3)
            if split == "val":
                mask[:2], mask[:, -3:] = 255, 255
            save(textured(width, height, i), root / f"data/{split}/images/s{i}.png")
            save(mask, root / f"data/{split}/masks/s{i}.png")
    shard(root / "data", root / "shards", ShardOptions(progress=False, workers=1))
    out = root / "run"
    assert run(["--shards", root / "shards", "--out", out, "--epochs", "4", "--lr", "0.02", *TRAIN]) == 0
    return root / "data/val", root / "shards", out


def reference_miou(checkpoint: Path, val: Path, scoring: Scoring) -> tuple[float, int]:
    """mIoU and labelled pixel count from the label files with numpy: each image resized (Pillow, as the torch
    loader does), run alone padded to the stride, its logits resized to the label and argmaxed."""
    module = load_module(checkpoint, "cpu")
    h = module.hparams
    confusion = np.zeros((3, 3), np.int64)
    for path in sorted((val / "images").iterdir()):
        label = np.asarray(Image.open(val / "masks" / path.name))
        image = Image.open(path).convert("RGB")
        rows, cols = label.shape
        height, width = keep_ratio_size(rows, cols, scoring.size) if scoring.size else tuple(h.image_size)
        pixels = np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)
        tensor = torch.from_numpy((pixels - np.array(h.mean, np.float32)) / np.array(h.std, np.float32))
        tensor = F.pad(tensor.permute(2, 0, 1)[None], (0, -width % 16, 0, -height % 16))
        with torch.no_grad():
            logits = module(tensor)[..., :height, :width]
        pred = F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=False).argmax(1)[0].numpy()
        labelled = label != 255
        confusion += np.bincount(label[labelled] * 3 + pred[labelled], minlength=9).reshape(3, 3)
    tp = np.diag(confusion)
    iou = tp / (confusion.sum(0) + confusion.sum(1) - tp)
    return float(np.nanmean(iou)), int(confusion.sum())


def evaluate(checkpoint: Path, shards: Path, out: Path, *flags) -> dict:
    assert run(["--checkpoint", checkpoint, "--shards", shards, "--split", "val", "--out", out, "--workers", "1",
                "--batch-size", "2", *flags], predict_main, "fastseg-predict") == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("backend, device", [("torch", "cpu"), ("dali", "cpu"),
                                             pytest.param("dali", "cuda", marks=pytest.mark.cuda)])
def test_loaders_hand_over_the_original_masks_beside_resized_images(mixed, backend, device):
    """The set's PNG images are stored raw (--store auto): on a GPU, DALI sends them there after a reshape and
    resizes them there, beside the original masks."""
    val, shards, _ = mixed
    loader = make_loader(shards, split="val", backend=backend, batch_size=3, size=(30, 30), keep_ratio=True,
                         original_labels=True, workers=1, device=device, return_keys=True)
    seen = 0
    for batch in loader:
        assert batch["image"].device.type == device
        images, masks = batch["image"].cpu(), batch["mask"].cpu()
        for i, (height, width, rows, cols) in enumerate(batch["sizes"][:batch["real"]]):
            label = np.asarray(Image.open(val / "masks" / f"{batch['key'][i]}.png"))
            assert (rows, cols) == label.shape and (height, width) == keep_ratio_size(rows, cols, (30, 30))
            assert (masks[i, :rows, :cols].numpy() == label).all()  # pixel for pixel, unresized
            assert (masks[i, rows:] == 255).all() and (masks[i, :, cols:] == 255).all()
            assert (images[i, :, height:] == 0).all() and (images[i, :, :, width:] == 0).all()
            assert images[i, :, :height, :width].abs().sum() > 0
            seen += 1
    assert seen == 5


def test_validation_and_predict_score_every_labelled_pixel_at_the_labels_resolution(mixed, tmp_path):
    val, shards, out = mixed
    labelled = sum(int((np.asarray(Image.open(p)) != 255).sum()) for p in (val / "masks").iterdir())
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["val_pixels"] == labelled and trained["scored_at"] == "label resolution"
    checkpoint = out / "checkpoints/last.ckpt"  # the model the last validation scored

    expected, pixels = reference_miou(checkpoint, val, Scoring())
    assert pixels == labelled
    assert trained["val_miou"] == pytest.approx(expected, abs=2e-3)  # validation ran through DALI
    torch_scored = evaluate(checkpoint, shards, tmp_path / "torch", "--loader", "torch")
    assert torch_scored["val_miou"] == pytest.approx(expected, abs=1e-4) and torch_scored["val_pixels"] == labelled
    dali_scored = evaluate(checkpoint, shards, tmp_path / "dali", "--loader", "dali")
    assert dali_scored["val_miou"] == pytest.approx(expected, abs=2e-3)

    # an evaluation scale with the aspect kept: images of several sizes in one batch, each padded alone
    kept, _ = reference_miou(checkpoint, val, Scoring(size=(40, 56)))
    scaled = evaluate(checkpoint, shards, tmp_path / "kept", "--loader", "torch", "--eval-size", "40", "56")
    assert scaled["val_miou"] == pytest.approx(kept, abs=1e-4) and scaled["eval_size"] == [40, 56]
    assert scaled["eval_resize"].startswith("aspect kept")

    # one window that covers the image: slide is whole
    slide = evaluate(checkpoint, shards, tmp_path / "slide", "--loader", "torch", "--eval-mode", "slide",
                     "--window", "48", "48", "--stride", "32", "32")
    assert slide["eval_mode"] == "slide" and slide["val_miou"] == pytest.approx(torch_scored["val_miou"], abs=1e-9)

    # the quick rule stays, named as such: the labels resized to 32×32, so fewer pixels
    quick = evaluate(checkpoint, shards, tmp_path / "quick", "--loader", "torch", "--eval-at-train-size")
    assert quick["scored_at"] == "train size" and quick["val_pixels"] < 5 * 32 * 32


def test_slide_windows_cover_every_pixel_and_average_overlaps():
    image = torch.arange(2 * 37 * 53, dtype=torch.float32).reshape(1, 2, 37, 53)
    calls = []

    def pointwise(x):  # any per-pixel network gives back its input, however the windows fall
        calls.append(tuple(x.shape))
        return x * 2

    found = slide_logits(pointwise, image, window=(16, 16), stride=(12, 12), multiple=16, batch=4)
    assert torch.equal(found, image * 2)
    assert all(shape[-2:] == (16, 16) for shape in calls)  # full windows, the last flush with the far edge
    assert sum(shape[0] for shape in calls) == 3 * 5  # (37-16+11)//12+1 rows × (53-16+11)//12+1 columns

    def corner(x):  # a network that sees where its window is: every pixel gets the window's top-left value
        return torch.ones_like(x[:, :1]) * x[:, :1, :1, :1]

    tiles = image[..., :32, :48]
    tiled = slide_logits(corner, tiles, window=(16, 16), stride=(16, 16), multiple=16, batch=8)
    rows, cols = torch.arange(32) // 16 * 16, torch.arange(48) // 16 * 16
    assert torch.equal(tiled[0, 0], tiles[0, 0][rows][:, cols])
    overlapped = slide_logits(corner, tiles, window=(32, 32), stride=(16, 16), multiple=16, batch=8)
    # windows at columns 0 and 16 both cover columns 16..31: their corners averaged there
    assert overlapped[0, 0, 0, 20] == (tiles[0, 0, 0, 0] + tiles[0, 0, 0, 16]) / 2
    assert overlapped[0, 0, 0, 5] == tiles[0, 0, 0, 0]


def test_scoring_flags_are_checked_before_anything_runs(mixed, tmp_path, capsys):
    _, shards, out = mixed
    checkpoint = out / "checkpoints/best.ckpt"
    for flags, said in ((["--eval-mode", "slide"], "--window H W and --stride H W"),
                        (["--eval-at-train-size", "--eval-size", "40", "40"], "takes neither"),
                        (["--window", "16", "16", "--stride", "8", "8"], "whole takes neither")):
        assert run(["--checkpoint", checkpoint, "--shards", shards, "--out", tmp_path / "x", *flags], predict_main,
                   "fastseg-predict") == 1
        assert said in capsys.readouterr().err
    assert run(["--shards", shards, "--out", tmp_path / "y", "--eval-mode", "slide", *TRAIN]) == 1
    assert "--window H W" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_predict_slide_masks_have_the_input_size_and_class_ids(mixed, tmp_path):
    _, _, out = mixed
    save(textured(70, 45, 3), tmp_path / "in/a.png")
    assert run(["--checkpoint", out / "checkpoints/best.ckpt", "--input", tmp_path / "in", "--out", tmp_path / "o",
                "--eval-size", "40", "60", "--eval-mode", "slide", "--window", "32", "32", "--stride", "16", "16"],
               predict_main, "fastseg-predict") == 0
    mask = Image.open(tmp_path / "o/a.png")
    assert mask.size == (70, 45) and set(np.unique(np.asarray(mask))) <= {0, 1, 2}
