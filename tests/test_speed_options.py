"""The trainer's speed options change nothing but speed, and fastseg-train's own meter adds up."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from fastseg.cli import run_cli
from fastseg.cli.train import main as train_main
from fastseg.losses import segmentation_loss
from fastseg.meter import flops_per_image, verdict
from fastseg.model import UNet
from fastseg.module import SegModule

from .conftest import split_shards


def module(**options) -> SegModule:
    torch.manual_seed(0)
    return SegModule(["a", "b", "c"], [[0, 0, 0]] * 3, [0.5] * 3, [0.25] * 3, (32, 32), width=4, **options)


def losses_after_steps(seg: SegModule, steps: int = 4, fused: bool | None = None) -> list[float]:
    seg.configure_model()
    optimizer = torch.optim.AdamW(seg.parameters(), lr=1e-2, fused=fused)
    generator = torch.Generator().manual_seed(1)
    found = []
    for _ in range(steps):
        image = torch.randn(2, 3, 32, 32, generator=generator)
        mask = torch.randint(0, 3, (2, 32, 32), generator=generator)
        loss = segmentation_loss(seg(image), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        found.append(loss.item())
    return found


def test_channels_last_output_equals_contiguous():
    plain, fast = module(), module(channels_last=True)
    fast.load_state_dict(plain.state_dict())
    image = torch.randn(2, 3, 32, 32)
    assert fast.model.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(image), plain(image), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("option", ["channels_last", "fused"])
def test_speed_options_train_like_the_plain_path(option):
    plain = losses_after_steps(module())
    fast = (losses_after_steps(module(channels_last=True)) if option == "channels_last"
            else losses_after_steps(module(), fused=True))
    assert plain[0] != plain[-1]  # it did learn something
    assert fast == pytest.approx(plain, rel=1e-4)


@pytest.mark.slow
def test_compile_trains_like_the_plain_path():
    compiled = module(compile=True)
    assert losses_after_steps(compiled, steps=3) == pytest.approx(losses_after_steps(module(), steps=3), rel=1e-4)
    assert compiled.model._compiled_call_impl is not None
    assert "inc.0.weight" in compiled.model.state_dict()  # checkpoints keep plain keys for fastseg-predict


def test_flops_count_forward_and_backward():
    forward = __import__("lightning_fabric.utilities.throughput", fromlist=["measure_flops"]).measure_flops
    with torch.device("meta"):
        model, image = UNet(3, width=8), torch.empty(1, 3, 64, 64)
    only_forward = forward(model, lambda: model(image))
    total = flops_per_image(3, 8, (64, 64))
    assert 2.5 * only_forward < total < 3.5 * only_forward  # backward costs about twice the forward
    assert flops_per_image(3, 8, (128, 128)) == pytest.approx(4 * total, rel=0.01)  # linear in pixels


def test_verdict_names_the_bottleneck():
    slow_input = verdict({"images_per_s": 50.0, "step_ms": 300.0, "data_stall": 0.4, "mfu": None}, "torch", 4, "gpu")
    assert slow_input.startswith("input-bound") and "--loader dali" in slow_input and "--workers (now 4)" in slow_input
    on_cpu = {"images_per_s": 9.0, "step_ms": 900.0, "data_stall": 0.3, "mfu": None}
    assert "--augment flip" in verdict(on_cpu, "dali", 2, "cpu", "crop")
    assert "--augment flip" not in verdict(on_cpu, "dali", 2, "cpu", "flip")  # already the cheap mode
    busy = verdict({"images_per_s": 350.0, "step_ms": 45.0, "data_stall": 0.01, "mfu": 0.42}, "dali", 16, "gpu")
    assert busy.startswith("compute-bound") and "MFU 42.0%" in busy and "--compile" in busy


def test_fastseg_train_reports_its_throughput(tmp_path, capsys):
    shards = split_shards(tmp_path, val=4)
    out = tmp_path / "run"
    code = run_cli("fastseg-train", train_main, [
        "--shards", str(shards), "--out", str(out), "--epochs", "3", "--width", "4", "--batch-size", "4",
        "--accelerator", "cpu", "--workers", "1", "--log-every", "2", "--channels-last", "--precision", "bf16-mixed"])
    assert code == 0
    throughput = json.loads((out / "metrics.json").read_text())["throughput"]
    assert [e["epoch"] for e in throughput["per_epoch"]] == [0, 1, 2]
    for epoch in throughput["per_epoch"]:
        assert epoch["images"] == 16  # images counted = images trained: 4 steps of 4
        assert 0 <= epoch["data_stall"] <= 1 and epoch["images_per_s"] > 0
        # the figures agree with each other (up to the rounding of the stored seconds and milliseconds)
        assert epoch["images_per_s"] == pytest.approx(epoch["images"] / epoch["seconds"], rel=0.01)
        assert epoch["step_ms"] == pytest.approx(1000 * epoch["seconds"] / 4, rel=0.01, abs=0.06)
    assert throughput["epochs_measured"] == [1, 2]  # the first epoch is the warm-up
    assert throughput["flops_per_image"] == flops_per_image(3, 4, (32, 32))
    assert throughput["mfu"] is None  # no known peak for a CPU
    assert f"throughput: {throughput['verdict']}" in capsys.readouterr().out
    rows = list(csv.DictReader(open(next(out.glob("logs/csv/version_*/metrics.csv")))))
    per_epoch = [r for r in rows if r.get("perf/images_per_s")]
    assert len(per_epoch) == 3 and all(0 <= float(r["perf/data_stall"]) <= 1 for r in per_epoch)
    assert len([r for r in rows if r.get("train_loss")]) == 6  # every second step of 12, not every step
    config = json.loads((out / "config.json").read_text())
    assert config["channels_last"] is True and config["precision"] == "bf16-mixed"
