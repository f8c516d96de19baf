"""The synthetic set the demo uses, and the loader benchmark, run for real on tiny data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastseg.shards import ShardOptions, shard
from fastseg.shards.synthetic import CLASSES, generate

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_set_is_varied_and_shards_cleanly(tmp_path):
    data = generate(tmp_path / "synth", count=12, seed=3)
    sizes = {Image.open(p).size for p in (data / "images").iterdir()}
    assert len(sizes) == 2  # more than one image size, as real folders have
    values = set()
    for mask in (data / "masks").iterdir():
        values |= set(np.unique(np.asarray(Image.open(mask))).tolist())
    assert values <= set(range(len(CLASSES))) and len(values) >= 3
    manifest = shard(data, tmp_path / "shards", ShardOptions(classes=data / "classes.json", progress=False, workers=2))
    assert [c.name for c in manifest.classes] == [name for name, _ in CLASSES]
    assert sum(s.samples for s in manifest.splits.values()) == 12


def run_loader_bench(data, shards, out, *extra):
    # worker counts pinned small: the suite must finish on a 16-core machine as on a 2-core one
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/loader_bench.py"), "--data", str(data), "--shards",
                             str(shards), "--size", "64", "64", "--rounds", "1", "--min-seconds", "0.2",
                             "--batch-size", "4", "--json", str(out), *extra], capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text())


def test_loader_bench_runs_and_reports(tmp_path):
    data = generate(tmp_path / "synth", count=16, seed=1)
    shard(data, tmp_path / "shards", ShardOptions(classes=data / "classes.json", val_fraction=0, progress=False, workers=2))
    out = tmp_path / "bench.json"
    report = run_loader_bench(data, tmp_path / "shards", out, "--workers", "1", "2", "--augment", "crop")
    assert [run["workers"] for run in report["runs"]] == [1, 2] and report["augment"] == "crop"
    for run in report["runs"]:
        for name in ("vanilla", "torch", "dali_cpu"):
            figures = run["loaders"][name]
            assert figures["samples_per_s"] > 0 and figures["peak_memory_mb"] > 0
            assert 0 < figures["cpu_utilisation"] <= 1.5
            assert min(figures["round_seconds"]) >= 0.2  # whole epochs repeated until the round is long enough
        assert run["loaders"]["torch"]["vs_vanilla"] == round(
            run["loaders"]["torch"]["samples_per_s"] / run["loaders"]["vanilla"]["samples_per_s"], 3)
        if not report["host"]["gpu"]:
            assert run["loaders"]["dali_gpu"] == run["loaders"]["torch_gpu"] == {"skipped": "no CUDA device"}
        assert run["decode_limit_samples_per_s"] > 0
    assert out.with_suffix(".png").exists()
    assert "| vanilla | 2 |" in out.with_suffix(".md").read_text()

    # any subset runs on its own: no vanilla, so no ratio to it
    subset = run_loader_bench(data, tmp_path / "shards", tmp_path / "subset.json", "--workers", "1", "--loaders",
                              "dali_cpu", "torch")
    assert list(subset["runs"][0]["loaders"]) == ["dali_cpu", "torch"]
    assert "vs_vanilla" not in subset["runs"][0]["loaders"]["torch"]


def test_train_bench_runs_both_paths(tmp_path):
    out = tmp_path / "train.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_bench.py"), "--size", "32", "32", "--width",
                             "4", "--steps", "3", "--warmup", "1", "--workers", "1", "--loaders", "vanilla", "dali",
                             "--sweep", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [(r["loader"], r["path"]) for r in report["runs"]] == [
        ("vanilla", "plain"), ("dali", "plain"), ("dali", "fastseg-train")]  # vanilla has no shards for the CLI
    for run in report["runs"]:
        assert run["images_per_s"] > 0 and 0 <= run["data_stall_fraction"] <= 1 and run["step_ms"] > 0
    assert report["flops_per_image"] > 0 and report["runs"][-1]["steps"] >= 3
