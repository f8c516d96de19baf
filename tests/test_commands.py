"""fastseg-train and fastseg-predict end to end on the CPU: both loaders, DDP, kill and resume, bad input."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import MISSING
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastseg.cli import run_cli
from fastseg.cli.predict import main as predict_main
from fastseg.cli.train import main as train_main

from .conftest import corrupt_one_image, save, split_shards, textured

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import servers  # noqa: E402  (benchmarks/servers.py: free ports, as the benchmarks find them)

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
    for picture in ("curves.png", "per_class_iou.png"):  # the run's pictures, redrawn after each validation
        with Image.open(out / picture) as drawn:
            assert drawn.format == "PNG" and drawn.size[0] > 300 and drawn.getextrema()[0][0] < 128  # not blank
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_miou", "val_dice", "val_precision", "val_recall", "val_f1", "val_pixel_acc"):
        assert 0 <= metrics[key] <= 1
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
    # the logits are resized to the image before the argmax (a class map scaled up would be blocky)
    import torch
    from torch.nn import functional as F

    from fastseg.cli.predict import load_module
    from fastseg.loading.contract import Normalize

    module = load_module(out / "checkpoints/best.ckpt", "cpu")
    photo = np.asarray(Image.open(tmp_path / "new/a.jpg").convert("RGB").resize((32, 32), Image.BILINEAR)).copy()
    with torch.no_grad():
        logits = module(Normalize(module.hparams.mean, module.hparams.std)(torch.from_numpy(photo).permute(2, 0, 1)[None]))
    expected = F.interpolate(logits, size=(30, 45), mode="bilinear", align_corners=False).argmax(1)[0].numpy()
    assert (np.asarray(a) == expected).all()
    assert Image.open(tmp_path / "pred/a_overlay.jpg").size == (45, 30)
    assert run(["--checkpoint", out / "checkpoints/best.ckpt", "--shards", shards, "--split", "val", "--out",
                tmp_path / "eval", "--workers", "1"], predict_main, "fastseg-predict") == 0
    evaluated = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert evaluated["val_pixels"] == metrics["val_pixels"]
    confusion = np.array(evaluated["confusion"])  # [true][predicted]: every labelled pixel once
    assert confusion.shape == (3, 3) and confusion.sum() == evaluated["val_pixels"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(evaluated["val_pixel_acc"], abs=1e-6)
    with Image.open(tmp_path / "eval/confusion.png") as drawn:
        assert drawn.format == "PNG" and drawn.size[0] > 300


def test_ddp_on_cpu_splits_the_data_and_syncs_metrics(shards, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "fastseg.cli.train", "--shards", shards, "--out", out,
                             "--epochs", "1", "--devices", "2", *TRAIN], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert steps_logged(out) == 2  # each rank: 8 of the 16 samples, two batches of 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_pixels"] == 6 * 32 * 32  # counts from both ranks summed: the whole split
    said = result.stdout + result.stderr
    assert "litlogger" not in said and "LeafSpec" not in said  # Lightning's noise is silenced
    assert said.count("throughput: ") == 1  # the report comes from rank 0 alone


def test_two_nodes_launched_by_torchrun(shards, tmp_path):
    """Two `torchrun --nnodes 2` processes on this machine, as two nodes would start them (gloo on the CPU)."""
    out, port = tmp_path / "nodes", servers.free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--master-addr", "127.0.0.1", "--master-port", str(port)]
    train = ["-m", "fastseg.cli.train", "--shards", str(shards), "--out", str(out), "--epochs", "1", "--num-nodes",
             "2", "--log-batch-keys", *map(str, TRAIN)]
    nodes = [subprocess.Popen([*torchrun, "--node-rank", str(rank), *train], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    said = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], said[0][-2000:] + said[1][-2000:]
    keys = []
    for rank in range(2):
        lines = (out / "batches" / f"rank{rank}.jsonl").read_text().splitlines()
        keys.append({k for line in lines for k in json.loads(line)["keys"]})
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 16  # disjoint slices, the whole split
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert json.loads((out / "metrics.json").read_text())["val_pixels"] == 6 * 32 * 32
    assert sum(s.count("throughput: ") for s in said) == 1  # metrics.json written by one process, once


def test_out_holding_a_run_needs_resume_or_overwrite(shards, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--shards", shards, "--out", out, "--epochs", "1", *TRAIN]
    assert run(["--resume", "auto", *args]) == 0  # nothing to resume: says so, and starts a new run
    assert "--resume auto: no checkpoint in" in capsys.readouterr().out
    (out / "notes.txt").write_text("mine")
    best = (out / "checkpoints/best.ckpt").read_bytes()
    assert run(args) == 1
    err = capsys.readouterr().err
    assert "already holds a run (best.ckpt, last.ckpt, metrics.json)" in err and "--resume auto" in err
    assert (out / "checkpoints/best.ckpt").read_bytes() == best  # refused before anything was written
    assert run([*args, "--resume", "auto", "--overwrite"]) == 1 and "give one of them" in capsys.readouterr().err
    assert run([*args, "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "--overwrite: removed the previous run's checkpoints, logs, previews, metrics.json, config.json" in said
    assert (out / "notes.txt").read_text() == "mine"  # only what fastseg-train writes is replaced
    assert len(list(out.glob("logs/csv/version_*"))) == 1  # a new run: no second log version beside the old one


def test_a_bad_sample_mid_run_keeps_the_last_checkpoint_whole(shards, tmp_path, capsys):
    import torch

    out, good = tmp_path / "run", tmp_path / "good"
    good.mkdir()
    for f in shards.iterdir():
        (good / f.name).write_bytes(f.read_bytes())
    args = ["--shards", good, "--out", out, "--loader", "dali", "--checkpoint-every", "2", *TRAIN]
    assert run([*args, "--epochs", "1"]) == 0
    saved = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    key = corrupt_one_image(shards, good)  # the set is damaged after the first epoch
    assert run([*args, "--epochs", "3", "--resume", "auto"]) == 1
    err = capsys.readouterr().err
    assert f"train-000000.tar: sample {key} does not decode" in err and "Traceback" not in err
    last = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)  # whole, loadable
    assert last["global_step"] >= saved["global_step"] and not list((out / "checkpoints").glob(".*partial*"))


def test_bad_input_fails_before_training(shards, tmp_path, capsys):
    cases = [
        (["--shards", tmp_path / "none"], "no such shard folder"),
        (["--shards", shards, "--split", "nope"], "no split 'nope'.*choose one with --split"),
        (["--shards", shards, "--val-split", "test"], "no split 'test'.*--val-split"),
        (["--shards", shards, "--image-size", "40"], r"40x40 does not pass .* multiple of 16 \(nearest: 48x48\)"),
        *([] if __import__("torch").cuda.is_available() else [(["--shards", shards, "--accelerator", "gpu"],
                                                                 "CUDA device")]),
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


# --- your own model and the recipes' schedule, end to end ---------------------------------------------------------
def test_your_own_model_trains_resumes_and_predicts(shards, tmp_path, capsys):
    import torch

    out = tmp_path / "own"
    args = ["--shards", shards, "--out", out, "--model", "tests.custom_model:build", "--model-arg", "width=6",
            "--checkpoint-every", "2", *TRAIN]
    assert run([*args, "--epochs", "1"]) == 0
    saved = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"]["model_path"] == "tests.custom_model:build"
    assert saved["hyper_parameters"]["model_args"] == {"width": 6}
    assert any(k.startswith("model.0.") for k in saved["state_dict"])  # the custom network's own layers
    assert run([*args, "--epochs", "2", "--resume", "auto"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["throughput"]["flops_per_image"] > 0  # the meter counted its FLOPs
    resumed = next(out.glob("logs/csv/version_1/metrics.csv"))
    assert max(int(r["step"]) for r in csv.DictReader(open(resumed)) if r.get("train_loss")) + 1 == 2 * 4
    assert run(["--checkpoint", out / "checkpoints/best.ckpt", "--shards", shards, "--split", "val", "--out",
                tmp_path / "eval", "--workers", "1"], predict_main, "fastseg-predict") == 0
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["val_pixels"] == 6 * 32 * 32
    assert run([*args, "--epochs", "1", "--out", tmp_path / "bad", "--model", "nope.nowhere:net"]) == 1
    assert "--model nope.nowhere:net: cannot import nope.nowhere" in capsys.readouterr().err


def test_sgd_with_poly_and_warmup_reaches_the_formulas_rates_and_max_steps_stops(shards, tmp_path):
    import pytorch_lightning as pl

    from fastseg.loading import SegDataModule
    from fastseg.training.module import SegModule
    from fastseg.training.optim import OptimSettings, lr_factor

    manifest = __import__("fastseg").load_manifest(shards)
    optim = OptimSettings(optimizer="sgd", lr=0.01, schedule="poly", warmup_steps=3, min_lr=1e-4, epochs=None)
    module = SegModule([c.name for c in manifest.classes], class_colors=[c.color for c in manifest.classes],
                       mean=manifest.mean, std=manifest.std, image_size=(32, 32), width=4, optim=optim)
    seen = []

    class Rates(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_index):
            optimizer = trainer.optimizers[0]
            seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))

    trainer = pl.Trainer(accelerator="cpu", max_steps=9, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Rates()],
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=SegDataModule(shards, batch_size=4, workers=0, backend="torch"))
    assert trainer.global_step == 9 and len(seen) == 9
    for step, (lr, momentum) in enumerate(seen):
        assert momentum == 0.9
        assert lr == pytest.approx(0.01 * lr_factor(step, schedule="poly", total=9, warmup=3, min_ratio=0.01))
    assert seen[0][0] == pytest.approx(0.01 / 3) and seen[2][0] == pytest.approx(0.01)  # the warm-up

    out = tmp_path / "steps"
    assert run(["--shards", shards, "--out", out, "--max-steps", "6", "--optimizer", "sgd", "--schedule", "poly",
                "--class-weights", "median-freq", *TRAIN]) == 0
    assert steps_logged(out) == 6  # one epoch of 4 steps and two of the next: where --max-steps says
    assert run(["--shards", shards, "--out", tmp_path / "both", "--max-steps", "6", "--epochs", "2", *TRAIN]) == 1


def test_one_checkpoint_scores_the_same_through_both_loaders(tmp_path):
    """Both loaders resample images by one rule (bilinear, antialiased when shrinking, pixel centres), so a model
    evaluated through either sees the same pixels: the scores agree."""
    from fastseg.loading import make_loader

    shards = split_shards(tmp_path / "big", size=(64, 64), val=6)
    dali, torch_batch = (next(iter(make_loader(shards, split="val", backend=backend, batch_size=6, size=(32, 32),
                                               augment="none", workers=0, shuffle=False)))["image"]
                         for backend in ("dali", "torch"))
    # the same pixels up to rounding (without antialiasing in DALI: 0.039 mean, 0.23 at most, normalized units)
    assert (dali - torch_batch).abs().mean() < 0.01 and (dali - torch_batch).abs().max() < 0.1
    out = tmp_path / "run"
    assert run(["--shards", shards, "--out", out, "--epochs", "2", "--image-size", "32", "--loader", "dali",
                *TRAIN]) == 0
    scores = {}
    for loader in ("dali", "torch"):
        assert run(["--checkpoint", out / "checkpoints/best.ckpt", "--shards", shards, "--split", "val", "--loader",
                    loader, "--workers", "1", "--out", tmp_path / loader], predict_main, "fastseg-predict") == 0
        scores[loader] = json.loads((tmp_path / loader / "metrics.json").read_text())["val_miou"]
    assert scores["dali"] == pytest.approx(scores["torch"], abs=0.002)


def test_a_run_reruns_from_its_config_file_and_the_command_line_wins(shards, tmp_path, capsys):
    import yaml

    first, second = tmp_path / "first", tmp_path / "second"
    assert run(["--shards", shards, "--out", first, "--epochs", "1", "--loader", "torch", *TRAIN]) == 0
    written = yaml.safe_load((first / "config.yaml").read_text())
    assert written["out"] == str(first) and written["batch_size"] == 4 and "resume" not in written
    assert run(["--config", first / "config.yaml", "--out", second]) == 0  # the flag wins over the file
    rerun = yaml.safe_load((second / "config.yaml").read_text())
    assert rerun == {**written, "out": str(second)}
    metrics = [json.loads((out / "metrics.json").read_text()) for out in (first, second)]
    for key in ("val_miou", "val_dice", "val_pixel_acc"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6)  # the same run: the same scores

    # --print-config: what a run would use, as YAML that --config reads back; a key no flag has names the nearest
    capsys.readouterr()
    assert run(["--config", first / "config.yaml", "--batch-size", "2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["batch_size"] == 2 and printed["shards"] == str(shards) and printed["resume"] is None
    (tmp_path / "typo.yaml").write_text("shards: x\nbatch_sise: 8\n")
    assert run(["--config", tmp_path / "typo.yaml"]) == 1
    assert "unknown key 'batch_sise'; did you mean batch_size?" in capsys.readouterr().err
    (tmp_path / "wrong.yaml").write_text(f"shards: {shards}\naugment: elastic\n")
    assert run(["--config", tmp_path / "wrong.yaml"]) == 1
    assert "augment is one of none, flip, crop, mmseg, rotate, not 'elastic'" in capsys.readouterr().err
    # an option of another mode is refused, naming the mode, not silently ignored
    assert run(["--shards", shards, "--out", tmp_path / "x", "--ratio-range", "0.5", "1.5", *TRAIN]) == 1
    assert "--ratio-range is an option of --augment mmseg and has no effect with --augment flip" in \
        capsys.readouterr().err


def test_fastseg_shard_takes_a_config_file_and_flags_between_its_folders(tmp_path, capsys):
    import yaml

    from fastseg.cli.shard import main as shard_main
    from fastseg.settings import parse_size

    from .conftest import make_dataset

    data = make_dataset(tmp_path / "data", count=6)
    # an option between the two folders, as users type it
    assert run([data, "--max-count", "2", tmp_path / "a", "--quiet", "--workers", "1"], shard_main, "fastseg-shard") == 0
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert all(s["samples"] <= 2 for split in manifest["splits"].values() for s in split["shards"])
    capsys.readouterr()
    assert run([data, tmp_path / "b", "--max-count", "3", "--print-config"], shard_main, "fastseg-shard") == 0
    (tmp_path / "b.yaml").write_text(capsys.readouterr().out)
    settings = yaml.safe_load((tmp_path / "b.yaml").read_text())
    assert settings["max_count"] == 3 and settings["out"] == str(tmp_path / "b") and not (tmp_path / "b").exists()
    assert settings["shard_size"] == 256 * 2**20  # the options' own default, 256 MiB, not 256·10⁶ bytes
    assert run(["--config", tmp_path / "b.yaml", "--quiet", "--workers", "1"], shard_main, "fastseg-shard") == 0
    manifest = json.loads((tmp_path / "b/manifest.json").read_text())
    assert max(s["samples"] for split in manifest["splits"].values() for s in split["shards"]) == 3
    assert parse_size("256MB") == 256 * 10**6 and parse_size("1GiB") == 2**30


WORKERS = (os.cpu_count() or 1) + 1  # not the machine's default
# a value other than the default for every declared option, as typed, and as its dataclass holds it; a new option
# with no row here fails the test below until it has one
OTHER_VALUES = {
    "backend": (["--loader", "torch"], "torch"), "batch_size": (["--batch-size", "3"], 3),
    "size": (["--image-size", "48", "48"], (48, 48)), "window_decode": (["--no-window-decode"], False),
    "vflip": (["--vflip"], True), "workers": (["--workers", str(WORKERS)], WORKERS), "seed": (["--seed", "7"], 7),
    "cache": (["--cache", "none"], "none"), "cache_limit": (["--cache-limit", "16MiB"], "16MiB"),
    "checksums": (["--no-checksums"], False), "return_keys": (["--log-batch-keys"], True),
    "channels_last": (["--channels-last"], True), "scale": (["--scale", "0.3", "0.9"], (0.3, 0.9)),
    "base_size": (["--base-size", "40", "48"], (40, 48)),
    "ratio_range": (["--ratio-range", "0.75", "1.5"], (0.75, 1.5)), "degrees": (["--degrees", "25"], 25.0),
    "cat_max_ratio": (["--cat-max-ratio", "0.5"], 0.5), "photometric": (["--no-photometric"], False),
    "optimizer": (["--optimizer", "sgd"], "sgd"), "lr": (["--lr", "0.02"], 0.02),
    "weight_decay": (["--weight-decay", "0.001"], 0.001), "schedule": (["--schedule", "poly"], "poly"),
    "warmup_steps": (["--warmup-steps", "5"], 5), "min_lr": (["--min-lr", "1e-5"], 1e-5),
    # fastseg-shard's
    "images": (["--images", "I"], Path("I")), "masks": (["--masks", "M"], Path("M")),
    "classes": (["--classes", "c.json"], Path("c.json")), "ignore_value": (["--ignore-value", "11"], 11),
    "val_fraction": (["--val-fraction", "0.2"], 0.2), "shard_size": (["--shard-size", "1MiB"], 2**20),
    "max_count": (["--max-count", "5"], 5), "resize_masks": (["--resize-masks"], True),
    "skip_unpaired": (["--skip-unpaired"], True), "overwrite": (["--overwrite"], True),
    "unannotated": (["--unannotated", "ignore"], "ignore"), "coco": (["--coco", "a.json"], [Path("a.json")]),
    "image_column": (["--image-column", "img"], "img"), "mask_column": (["--mask-column", "lbl"], "lbl"),
    "keep_zero_label": (["--keep-zero-label"], True), "mask_threshold": (["--mask-threshold", "128"], 128),
    "pair_key": (["--pair-key", r"(\d+)"], r"(\d+)"), "group_by": (["--group-by", r"^(\w+)_"], r"^(\w+)_"),
    "map_values": (["--map-values", "1:2"], {1: 2}), "store": (["--store", "raw"], "raw"),
}


def test_every_declared_option_reaches_its_settings(shards, tmp_path, monkeypatch):
    """Each option declared on a settings dataclass, given a value other than its default on the command line,
    arrives in that dataclass: through fastseg-train's resolve (the loader and the optimizer, once per augmentation
    for the options of one) and through fastseg-shard's main (its ShardOptions)."""
    import fastseg.cli.shard as shard_cli
    from fastseg.cli import configs
    from fastseg.cli.train import build_parser, resolve
    from fastseg.loading import LoaderConfig
    from fastseg.settings import declared
    from fastseg.shards import ShardOptions
    from fastseg.training import OptimSettings

    def given(cls, mode=None):
        specs = [s for s in declared(cls) if s.metadata["mode"] in (None, mode) and s.name != "augment"]
        missing = [s.name for s in specs if s.name not in OTHER_VALUES]
        assert not missing, f"give OTHER_VALUES a non-default value for {', '.join(missing)}"
        for spec in specs:  # the value is not the default, or arriving would prove nothing
            default = spec.default_factory() if spec.default_factory is not MISSING else spec.default
            assert OTHER_VALUES[spec.name][1] != default, spec.name
        return specs, [word for spec in specs for word in OTHER_VALUES[spec.name][0]]

    def arrived(found, specs):
        for spec in specs:
            value = getattr(found, spec.name)
            assert (list(value) if isinstance(value, tuple) else value) == \
                (list(OTHER_VALUES[spec.name][1]) if isinstance(OTHER_VALUES[spec.name][1], tuple)
                 else OTHER_VALUES[spec.name][1]), f"{spec.name} did not arrive: {value!r}"

    for mode in ("crop", "mmseg", "rotate"):
        loader, loader_argv = given(LoaderConfig, mode)
        optim, optim_argv = given(OptimSettings)
        argv = ["--shards", shards, "--out", tmp_path / mode, "--accelerator", "cpu", "--augment", mode,
                *loader_argv, *optim_argv]
        run = resolve(configs.parse(build_parser(), [str(a) for a in argv]))
        arrived(run.loader, loader)
        assert run.loader.augment == mode  # the one option each pass sets to its own value
        arrived(run.optim, optim)

    options, shard_argv = given(ShardOptions)
    seen = []
    monkeypatch.setattr(shard_cli, "shard", lambda src, out, opts: seen.append(opts))
    assert shard_cli.main(["src", "out", *shard_argv]) == 0
    arrived(seen[0], options)


def test_predict_and_report_take_a_config_file_too(tmp_path, capsys):
    import yaml

    from fastseg.cli.report import main as report_main

    capsys.readouterr()
    assert run(["--checkpoint", "c.ckpt", "--out", tmp_path, "--eval-mode", "slide", "--print-config"], predict_main,
               "fastseg-predict") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["checkpoint"] == "c.ckpt" and printed["eval_mode"] == "slide" and printed["batch_size"] == 8
    (tmp_path / "report.yaml").write_text("shards: somewhere\nsamples: 3\n")
    assert run(["--config", tmp_path / "report.yaml", "--seed", "4", "--print-config"], report_main,
               "fastseg-report") == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"shards": "somewhere", "out": None, "samples": 3, "seed": 4}
    (tmp_path / "typo.yaml").write_text("shards: somewhere\nsample: 3\n")
    assert run(["--config", tmp_path / "typo.yaml"], report_main, "fastseg-report") == 1
    assert "unknown key 'sample'; did you mean samples?" in capsys.readouterr().err


def test_every_flag_of_an_option_comes_from_its_field(shards, tmp_path, capsys):
    from dataclasses import fields

    from fastseg.cli import configs
    from fastseg.cli.shard import build_parser as shard_parser
    from fastseg.cli.train import build_parser as train_parser
    from fastseg.loading import LoaderConfig
    from fastseg.shards import ShardOptions
    from fastseg.training import OptimSettings

    for parser, classes in ((train_parser(), (LoaderConfig, OptimSettings)), (shard_parser(), (ShardOptions,))):
        actions = {a.option_strings[0]: a for a in configs.settable(parser).values() if a.option_strings}
        for field in (field for cls in classes for field in fields(cls)):
            if "flag" not in field.metadata:
                continue
            flag = field.metadata["flag"] or "--" + field.name.replace("_", "-")
            action = actions[flag]  # every declared option has its flag
            assert action.help.startswith(field.metadata["help"]), flag
            if flag not in ("--channels-last", "--workers"):  # decided by the machine where left unset
                assert action.default == field.default, flag
    # an option of another augmentation is refused, naming it
    assert run(["--shards", shards, "--out", tmp_path / "x", "--scale", "0.2", "0.9", *TRAIN]) == 1
    assert "--scale is an option of --augment crop and has no effect with --augment flip" in capsys.readouterr().err
