"""The synthetic set the demo uses, and the loader benchmark, run for real on tiny data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastseg.shard import Options, shard
from fastseg.synthetic import CLASSES, generate

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_set_is_varied_and_shards_cleanly(tmp_path):
    data = generate(tmp_path / "synth", count=12, seed=3)
    sizes = {Image.open(p).size for p in (data / "images").iterdir()}
    assert len(sizes) == 2  # more than one image size, as real folders have
    values = set()
    for mask in (data / "masks").iterdir():
        values |= set(np.unique(np.asarray(Image.open(mask))).tolist())
    assert values <= set(range(len(CLASSES))) and len(values) >= 3
    manifest = shard(data, tmp_path / "shards", Options(classes=data / "classes.json", progress=False, workers=2))
    assert [c.name for c in manifest.classes] == [name for name, _ in CLASSES]
    assert sum(s.samples for s in manifest.splits.values()) == 12


def test_loader_bench_runs_and_reports(tmp_path):
    data = generate(tmp_path / "synth", count=16, seed=1)
    shard(data, tmp_path / "shards", Options(classes=data / "classes.json", val_fraction=0, progress=False))
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/loader_bench.py"), "--data", str(data), "--shards",
                             str(tmp_path / "shards"), "--size", "64", "64", "--epochs", "1", "--batch-size", "4",
                             "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    for name in ("vanilla", "torch", "dali_cpu"):
        figures = report["loaders"][name]
        assert figures["samples_per_s"] > 0 and figures["peak_memory_mb"] > 0 and 0 < figures["cpu_utilisation"] <= 1.5
    assert report["loaders"]["dali_gpu"] == {"skipped": "no CUDA device"} or report["host"]["gpu"]
    assert report["decode_limit_samples_per_s"] > 0 and out.with_suffix(".png").exists()
    assert "| vanilla |" in out.with_suffix(".md").read_text()
