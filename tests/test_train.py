"""fastseg-train and fastseg-predict end to end on the CPU: both loaders, DDP, kill and resume, bad input."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastseg.cli import run_cli
from fastseg.cli.predict import main as predict_main
from fastseg.cli.train import main as train_main

from .conftest import save, split_shards, textured

TRAIN = ["--width", "4", "--batch-size", "4", "--accelerator", "cpu", "--workers", "1", "--no-checksums",
         "--log-every", "1"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return split_shards(tmp_path_factory.mktemp("train"))


def run(argv, main=train_main, prog="fastseg-train"):
    return run_cli(prog, main, [str(a) for a in argv])


def steps_logged(out: Path) -> int:
    rows = list(csv.DictReader(open(next(out.glob("logs/csv/version_*/metrics.csv")))))
    return max(int(r["step"]) for r in rows if r.get("train_loss")) + 1


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_train_then_predict_end_to_end(loader, shards, tmp_path):
    out = tmp_path / "run"
    assert run(["--shards", shards, "--out", out, "--epochs", "2", "--loader", loader, *TRAIN]) == 0
    assert (out / "checkpoints/best.ckpt").exists() and (out / "checkpoints/last.ckpt").exists()
    assert list(out.glob("logs/tensorboard/version_0/events.out.tfevents.*")) and list(out.glob("logs/csv/version_0/*.csv"))
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["epoch_000.png", "epoch_001.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_miou", "val_dice", "val_precision", "val_recall", "val_f1", "val_pixel_acc"):
        assert metrics[key] is None or 0 <= metrics[key] <= 1
    assert set(metrics["per_class_iou"]) == {"class_0", "class_1", "class_2"}
    assert metrics["val_pixels"] == 6 * 32 * 32  # every validation pixel counted once, padding not at all
    assert json.loads((out / "config.json").read_text())["loader"] == loader
    assert steps_logged(out) == 2 * 4  # 16 samples / batch 4, two epochs

    # predict: masks of each input's own size (not the training size), palette PNG for several classes
    save(textured(45, 30, 1), tmp_path / "new/a.jpg")
    save(textured(20, 52, 2), tmp_path / "new/sub/b.png")
    assert run(["--checkpoint", out / "checkpoints/best.ckpt", "--input", tmp_path / "new", "--out", tmp_path / "pred",
                "--overlay"], predict_main, "fastseg-predict") == 0
    a, b = Image.open(tmp_path / "pred/a.png"), Image.open(tmp_path / "pred/sub/b.png")
    assert (a.size, a.mode, b.size) == ((45, 30), "P", (20, 52))
    assert set(np.unique(np.asarray(a))) <= {0, 1, 2}
    assert Image.open(tmp_path / "pred/a_overlay.jpg").size == (45, 30)
    assert run(["--checkpoint", out / "checkpoints/best.ckpt", "--shards", shards, "--split", "val", "--out",
                tmp_path / "eval", "--workers", "1"], predict_main, "fastseg-predict") == 0
    evaluated = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert evaluated["val_pixels"] == metrics["val_pixels"]


def test_ddp_on_cpu_splits_the_data_and_syncs_metrics(shards, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "fastseg.cli.train", "--shards", shards, "--out", out,
                             "--epochs", "1", "--devices", "2", *TRAIN], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert steps_logged(out) == 2  # each rank: 8 of the 16 samples, two batches of 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_pixels"] == 6 * 32 * 32  # counts from both ranks summed: the whole split


def test_killed_run_resumes_to_the_planned_epochs(shards, tmp_path):
    out = tmp_path / "resume"
    cmd = [sys.executable, "-m", "fastseg.cli.train", "--shards", str(shards), "--out", str(out), "--epochs", "4",
           *TRAIN, "--batch-size", "1", "--width", "16", "--image-size", "64", "--loader", "torch"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoints/last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # into the second epoch
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    import torch

    assert torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["epoch"] < 3
    result = subprocess.run(cmd + ["--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["resumed_from"].endswith("last.ckpt")

    state = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 3 and state["global_step"] == 4 * 16  # every planned step, none twice
    assert state["lr_schedulers"][0]["last_epoch"] == 4 and state["optimizer_states"][0]["state"]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4


def test_bad_input_fails_before_training(shards, tmp_path, capsys):
    cases = [
        (["--shards", tmp_path / "none"], "no such shard folder"),
        (["--shards", shards, "--split", "nope"], "no split 'nope'.*choose one with --split"),
        (["--shards", shards, "--val-split", "test"], "no split 'test'.*--val-split"),
        (["--shards", shards, "--image-size", "40"], r"40x40 does not pass .* multiple of 16 \(nearest: 48x48\)"),
        (["--shards", shards, "--accelerator", "gpu"], "CUDA device"),
        (["--shards", shards, "--precision", "16-mixed", "--accelerator", "cpu"], "needs a GPU"),
        (["--shards", shards, "--resume", tmp_path / "x.ckpt"], "no such checkpoint"),
    ]
    for argv, message in cases:
        assert run([*argv, "--out", tmp_path / "out"]) == 1
        assert __import__("re").search(message, capsys.readouterr().err)
        assert not (tmp_path / "out").exists()
    assert run(["--checkpoint", tmp_path / "x.ckpt", "--input", tmp_path, "--out", tmp_path / "p"], predict_main,
               "fastseg-predict") == 1
    assert "no such checkpoint" in capsys.readouterr().err
