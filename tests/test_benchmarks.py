"""The benchmark scripts, each run for real on a few samples, and the synthetic set the demo and benchmarks use."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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



def test_loader_bench_runs_the_webdataset_peer(tmp_path):
    from .conftest import make_dataset

    data = make_dataset(tmp_path / "data", count=12, size=(48, 32), mask="index", classes=3)
    shard(data, tmp_path / "shards", ShardOptions(val_fraction=0, max_count=4, progress=False, workers=2))
    report = run_loader_bench(data, tmp_path / "shards", tmp_path / "peer.json", "--size", "32", "48", "--workers",
                              "2", "--loaders", "webdataset_r2", "webdataset_r1")
    # any subset runs on its own, in the order given: no vanilla, so no ratio to it
    assert list(report["runs"][0]["loaders"]) == ["webdataset_r2", "webdataset_r1"]
    for name in ("webdataset_r1", "webdataset_r2"):
        figures = report["runs"][0]["loaders"][name]
        assert "vs_vanilla" not in figures
        assert figures["samples_per_s"] > 0
        assert all(r > 0 for r in figures["round_samples_per_s"])
        assert figures["batch"] == [[4, 3, 32, 48], "torch.float32", [4, 32, 48], "torch.int64"]  # the contract
        assert figures["cold_epoch_seconds"] > 0 and figures["cold_epoch_samples_per_s"] > 0
    ratios = [report["runs"][0]["loaders"][name]["vs_best_peer"] for name in ("webdataset_r1", "webdataset_r2")]
    assert max(ratios) == 1.0 and min(ratios) < 1.0


def peer_python() -> str:
    """An interpreter with LitData and Mosaic: FASTSEG_PEER_PYTHON (benchmarks/peers_setup.sh makes one), or this one
    where they are installed here."""
    import importlib.util
    import os

    found = os.environ.get("FASTSEG_PEER_PYTHON")
    if found:
        return found
    if importlib.util.find_spec("litdata") and importlib.util.find_spec("streaming"):
        return sys.executable
    pytest.skip("LitData and Mosaic are benchmark-only peers, not installed here (benchmarks/peers_setup.sh)")


def test_loader_bench_runs_litdata_and_mosaic(tmp_path):
    from .conftest import make_dataset

    python = peer_python()
    data = make_dataset(tmp_path / "data", count=12, size=(48, 32), mask="index", classes=3)
    shard(data, tmp_path / "shards", ShardOptions(val_fraction=0, max_count=4, progress=False, workers=2))
    names = ["litdata_r1", "litdata_r2", "mosaic_r1", "mosaic_r2"]
    report = run_loader_bench(data, tmp_path / "shards", tmp_path / "peers.json", "--size", "32", "48", "--workers",
                              "1", "--loaders", *names, "--peer-python", python)
    for name in names:
        assert report["runs"][0]["loaders"][name]["batch"] == [[4, 3, 32, 48], "torch.float32", [4, 32, 48],
                                                               "torch.int64"]
    for kind in ("litdata", "mosaic"):
        assert report["peers"]["conversion"][kind]["samples"] == 12 and report["peers"]["versions"][
            "mosaicml-streaming" if kind == "mosaic" else kind]


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


# --- every benchmark script runs, on a few samples -------------------------------------------------------------
def bench(script: str, out: Path, *argv, statuses=(0,)) -> tuple[dict, int]:
    """Run benchmarks/SCRIPT with `--json out`; its results, and its exit status (one of `statuses`)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, argv), "--json", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode in statuses, done.stderr[-2000:]
    return json.loads(out.read_text()), done.returncode


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from .conftest import make_dataset

    root = tmp_path_factory.mktemp("tiny")
    data = make_dataset(root / "data", count=12, size=(64, 48))
    shard(data, root / "shards", ShardOptions(val_fraction=0.25, progress=False, workers=2))
    return data, root / "shards"


@pytest.mark.slow
def test_the_stage_benchmarks_run_and_report(tiny, tmp_path):
    data, shards = tiny
    dali, _ = bench("dali_stages.py", tmp_path / "dali.json", "--shards", shards, "--threads", "1", "--batch-size",
                    "3", "--batches", "6")
    assert dali["size"] == [48, 64] and dali["loader_samples_per_s"] > 0
    costs, whole = dali["stage_ms_per_sample"], dali["stages_samples_per_s"]["widen"]  # each stage's share adds up
    assert list(costs) == ["read", "decode", "augment", "normalize", "widen"]
    assert sum(costs.values()) == pytest.approx(1000 / whole, abs=0.01)
    sharding, _ = bench("shard_bench.py", tmp_path / "shard.json", "--data", data, "--workers", "1",
                        "--min-seconds", "0.05")
    (figures,) = sharding["datasets"].values()
    assert figures["samples"] == 12 and 0 < figures["of_limit"] and figures["peak_memory_mb"]["whole"] > 0


@pytest.mark.slow
def test_the_learning_check_learns(tmp_path):
    """The learning check trains a small UNet on the synthetic set (tinted shapes on textured backgrounds): it must
    learn, well past what predicting background everywhere scores (its IoU over 4 classes, about 0.23), and say so
    with its exit status; a bar it cannot reach makes it fail."""
    data = generate(tmp_path / "synth", count=60, seed=1)
    common = ("--data", data, "--epochs", "8", "--image-size", "64", "--width", "8", "--loader", "torch", "--lr",
              "1e-2")
    found, status = bench("learning_check.py", tmp_path / "learning.json", *common, "--bar", "0.45")
    assert status == 0 and found["passed"] and found["val_miou"] >= 0.45, found  # 0.60 here
    assert sum(iou > 0.3 for name, iou in found["per_class_iou"].items() if name != "class_0") >= 2, found


def test_benchmarks_use_only_what_fastseg_exports():
    """No sys.path edits, and from fastseg only public names: a stage package (shards, loading, training) only
    through its face, the names in the package's __all__, never through one of its modules."""
    import ast
    import importlib

    stages = ("shards", "loading", "training")
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, path
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastseg")):
                continue
            parts = node.module.split(".")
            assert not (len(parts) > 2 and parts[1] in stages), (path.name, f"import from fastseg.{parts[1]}, not "
                                                                 f"{node.module}")
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert not alias.name.startswith("_"), (path.name, node.module, alias.name)
                if len(parts) == 2 and parts[1] in stages:
                    assert alias.name in module.__all__, (path.name, node.module, alias.name)


def test_the_parts_benchmark_runs_and_reports(tiny, tmp_path):
    data, _ = tiny
    found, _ = bench("parts_bench.py", tmp_path / "parts.json", "--data", data, "--parts", "1", "2",
                     "--simulated", "3", "30")
    assert [r["parts"] for r in found["runs"]] == [1, 2] and all(r["samples_per_s"] > 0 for r in found["runs"])
    assert [m["parts"] for m in found["merge_only"]] == [3, 30] and found["single_machine"]["seconds"] > 0


def test_loader_bench_times_the_published_recipe(tmp_path):
    data = generate(tmp_path / "synth", count=12, seed=2)
    shard(data, tmp_path / "shards", ShardOptions(classes=data / "classes.json", val_fraction=0, progress=False, workers=2))
    report = run_loader_bench(data, tmp_path / "shards", tmp_path / "mmseg.json", "--workers", "1", "--augment", "mmseg",
                              "--base-size", "64", "64", "--loaders", "vanilla", "torch", "dali_cpu")
    assert report["augment"] == "mmseg" and report["mmseg"]["base_size"] == [64, 64]
    for name in ("vanilla", "torch", "dali_cpu"):
        assert report["runs"][0]["loaders"][name]["samples_per_s"] > 0
        assert report["runs"][0]["loaders"][name]["batch"][0][-2:] == [64, 64]


def test_the_store_and_ranged_read_tables_are_what_their_results_files_hold():
    """store_bench.py's and ranged_reads.py's tables, made in this process from the committed results files: the
    rows their pages show (so the logic that turns figures into the pages' rows is checked without the servers)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ranged_reads
    import store_bench

    for module, stem in ((store_bench, "stores_davis_cpu"), (ranged_reads, "ranged_reads_cpu")):
        result = json.loads((ROOT / f"benchmarks/results/{stem}.json").read_text())
        page = (ROOT / f"benchmarks/results/{stem}.md").read_text()
        rows = module.table(result)
        assert len(rows) > 4 and all(row in page for row in rows), stem
    worst = store_bench.table(result := json.loads((ROOT / "benchmarks/results/stores_davis_cpu.json").read_text()))
    s3_torch = result["stores"]["s3"]["torch"]
    ratio = min(r / d for r, d in zip(s3_torch["clean"]["rates"], s3_torch["disk"]["rates"]))
    assert any(row.startswith("| s3 | torch | clean |") and f"{ratio:.2f}×" in row for row in worst)


def test_loader_bench_compares_and_reports_its_committed_results_again(tmp_path):
    """loader_bench.py's comparison (each loader × vanilla's and × the best peer's) and its report, run in this
    process on the committed results files with their ratios taken away: the same ratios, the same best peer, and
    the rows of the committed pages."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import loader_bench

    for stem in ("peers_davis10_flip_cpu", "peers_camvid_flip_cpu", "loader_davis10_mmseg_window_cpu"):
        result = json.loads((ROOT / f"benchmarks/results/{stem}.json").read_text())
        stored = json.loads(json.dumps(result["runs"]))
        for run in result["runs"]:
            run.pop("best_peer", None)
            for figures in run["loaders"].values():
                figures.pop("vs_vanilla", None), figures.pop("vs_best_peer", None)
        assert [loader_bench.compare(run) for run in result["runs"]] == stored, stem
        loader_bench.report(result, tmp_path / f"{stem}.json")
        page = (ROOT / f"benchmarks/results/{stem}.md").read_text()
        rows = [line for line in (tmp_path / f"{stem}.md").read_text().splitlines() if line.startswith("|")]
        assert len(rows) > 6 and all(row in page for row in rows), stem
        assert (tmp_path / f"{stem}.png").stat().st_size > 5000  # its chart


def test_the_ranged_reads_benchmark_runs(tmp_path):
    found, _ = bench("ranged_reads.py", tmp_path / "reads.json", "--reads", "40", "--threads", "4", "--size", "4096")
    assert found["reads_per_s"]["obstore"] > 0 and found["reads_per_s"]["boto3"] > 0
    assert all(ms > 0 for ms in found["client_cpu_ms_per_read"].values())


def test_charts_compare_at_most_eight_bars_with_their_ratios_in_two_colour_families(tmp_path):
    """The performance page's charts (benchmarks/charts.py): each bar labelled with its value and its ratio to the
    baseline (the best recipe of a named peer, per panel), fastseg blue and peers orange, a sweep as panels, and a
    ninth bar refused rather than squeezed in."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("charts", ROOT / "benchmarks/charts.py")
    charts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(charts)
    rates = {"vanilla": 50.0, "dali_cpu": 300.0, "litdata_r1": 60.0, "litdata_r2": 120.0}
    result = {"runs": [{"workers": w, "decode_limit_samples_per_s": 400.0 * w,
                        "loaders": {k: {"samples_per_s": v * w} for k, v in rates.items()}} for w in (1, 2)]}
    alt = charts.loader_chart(result, tmp_path / "c.png", "test", baseline="best:litdata")
    assert (tmp_path / "c.png").stat().st_size > 5000
    panels = alt.split(" | ")
    assert len(panels) == 2 and panels[1].startswith("2 workers")
    assert "dali_cpu 600 samples/s (2.50×)" in panels[1] and "litdata_r2 240 samples/s (1.00×)" in panels[1]
    blue, orange = (int(charts.colour(n)[1:3], 16) < int(charts.colour(n)[5:7], 16) for n in ("dali_cpu", "mosaic_r2"))
    assert blue and not orange and charts.colour("vanilla") == charts.BASELINE
    assert charts.colour("litdata_r1") != charts.colour("litdata_r2")  # a peer's two recipes, two shades
    nine = [("vanilla", 1.0)] + [(f"torch{i}", float(i + 2)) for i in range(8)]
    with pytest.raises(ValueError, match="at most 8"):
        charts.panels(None, "too many", [("2 workers", nine)], "samples/s", "vanilla")
