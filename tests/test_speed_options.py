"""The trainer's speed options change nothing but speed, and fastseg-train's own meter adds up."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fastseg.cli import run_cli
from fastseg.cli.train import main as train_main
from fastseg.training.losses import segmentation_loss
from fastseg.training.meter import FetchTimer, ThroughputMeter, flops_per_image, mfu, peak_flops, verdict
from fastseg.training.model import UNet
from fastseg.training.module import SegModule

from .conftest import split_shards


def module(**options) -> SegModule:
    torch.manual_seed(0)
    return SegModule(["a", "b", "c"], class_colors=[[0, 0, 0]] * 3, mean=[0.5] * 3, std=[0.25] * 3,
                     image_size=(32, 32), width=4, **options)


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


def test_a_channels_last_batch_reaches_the_model_without_a_copy():
    seg = module(channels_last=True)
    seen = []
    seg.model.register_forward_pre_hook(lambda model, args: seen.append(args[0].data_ptr()))
    batch = torch.randn(2, 32, 32, 3).permute(0, 3, 1, 2)  # as the loaders hand it over with channels_last=True
    seg(batch)
    assert seen == [batch.data_ptr()]
    plain = torch.randn(2, 3, 32, 32)
    seg(plain)
    assert seen[-1] != plain.data_ptr()  # an N×C×H×W batch would be copied into the layout


def first_step(seg: SegModule) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The logits and the gradients of one step on a fixed batch."""
    seg.configure_model()
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 32, 32, generator=generator)
    mask = torch.randint(0, 3, (2, 32, 32), generator=generator)
    logits = seg(image)
    segmentation_loss(logits, mask).backward()
    return logits.detach(), {name: p.grad for name, p in seg.named_parameters()}


def assert_same_step(fast: SegModule, plain: SegModule) -> None:
    # other kernels sum in another order: the same step agrees to float32 rounding, not to the bit
    (logits, grads), (want_logits, want_grads) = first_step(fast), first_step(plain)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-4 * float(grad.abs().max()) + 1e-7)


# Training amplifies those roundings step by step (seen: rel 1.3e-3 after four steps on another x86 CPU), so the
# losses of a few steps agree within a tolerance that holds on any machine, still far below what a real change
# (a wrong layout, a skipped update) does to them.
LOSS_TOLERANCE = 2e-2


@pytest.mark.parametrize("option", ["channels_last", "fused"])
def test_speed_options_train_like_the_plain_path(option):
    if option == "channels_last":
        assert_same_step(module(channels_last=True), module())
    plain = losses_after_steps(module())
    fast = (losses_after_steps(module(channels_last=True)) if option == "channels_last"
            else losses_after_steps(module(), fused=True))
    assert plain[-1] < 0.97 * plain[0]  # it did learn something: far more than the tolerance below
    assert fast == pytest.approx(plain, rel=LOSS_TOLERANCE)


# On the CPU the compiled path runs through AOTAutograd with eager kernels (seconds), where inductor would generate
# and build C++ for a minute; inductor itself is tested where it pays off, on a GPU
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.cuda)])
def test_compile_trains_like_the_plain_path(backend, monkeypatch):
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend=backend, **kw))
    compiled = module(compile_model=True)
    assert_same_step(compiled, module())
    compiled = module(compile_model=True)
    assert losses_after_steps(compiled, steps=3) == pytest.approx(losses_after_steps(module(), steps=3),
                                                                  rel=LOSS_TOLERANCE)
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


class Sleepy:
    """Batches that take `seconds` each to arrive."""

    def __init__(self, seconds: float, batches: int = 8):
        self.seconds, self.batches = seconds, batches

    def __len__(self):
        return self.batches

    def __iter__(self):
        for _ in range(self.batches):
            time.sleep(self.seconds)
            yield {"image": torch.zeros(2, 3, 4, 4), "real": 2}


class KnownStep(pl.LightningModule):
    """A training step of a known length."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.weight = seconds, torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_index):
        time.sleep(self.seconds)
        return (self.weight * batch["image"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("wait,step", [(0.03, 0.03), (0.0, 0.03)])
def test_the_meter_reports_a_known_stall(wait, step):
    timer = FetchTimer()
    meter = ThroughputMeter(timer)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, profiler=timer, callbacks=[meter], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(KnownStep(step), train_dataloaders=Sleepy(wait))
    assert len(meter.epochs) == 2
    for epoch in meter.epochs:
        assert epoch["data_stall"] == pytest.approx(wait / (wait + step), abs=0.1)
        assert epoch["images"] == 16 and epoch["steps"] == 8


SLOW_RANK = """
import json, sys, time
import pytorch_lightning as pl
import torch
sys.path.insert(0, {root!r})
from tests.test_speed_options import KnownStep, Sleepy
from fastseg.training.meter import FetchTimer, ThroughputMeter

class OneSlowRank(Sleepy):
    def __iter__(self):
        self.seconds = 0.08 if torch.distributed.get_rank() == 1 else 0.0
        yield from super().__iter__()

if __name__ == "__main__":
    timer = FetchTimer()
    meter = ThroughputMeter(timer)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, profiler=timer,
                         callbacks=[meter], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(KnownStep(0.01), train_dataloaders=OneSlowRank(0.0, batches=6))
    if trainer.is_global_zero:
        json.dump(meter.epochs, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_under_ddp_the_stall_is_the_slowest_ranks(tmp_path):
    """Rank 1 waits for every batch and rank 0 does not: all ranks wait for the slowest, so the run is stalled."""
    script = tmp_path / "slow_rank.py"
    script.write_text(SLOW_RANK.format(root=str(Path(__file__).parents[1])))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "epochs.json")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (epoch,) = json.loads((tmp_path / "epochs.json").read_text())
    assert epoch["images"] == 2 * 12  # both ranks' images, summed
    assert epoch["data_stall"] > 0.5  # rank 1's wait (0.08 s against a 0.01 s step), not rank 0's ~0
    assert "sync_dist" not in done.stderr


def test_the_run_mfu_is_per_device():
    meter = ThroughputMeter(FetchTimer(), flops=1e12, peak=100e12)
    meter.devices = 2  # two ranks trained these images together
    meter.epochs = [{"epoch": e, "images": 200, "steps": 10, "seconds": 2.0, "images_per_s": 100.0, "step_ms": 200.0,
                     "data_stall": 0.0, "mfu": mfu(1e12, 100.0, 100e12, 2)} for e in range(3)]
    summary = meter.report("dali", 4, "gpu")
    assert summary["mfu"] == pytest.approx(0.5) == meter.epochs[1]["mfu"]  # 1e14 FLOP/s over 2 × 1e14 peak
    assert "MFU 50.0%" in summary["verdict"]


@pytest.mark.parametrize("board,precision,tf32,peak", [
    ("NVIDIA H200", "16-mixed", True, 989.4e12), ("NVIDIA H200 NVL", "bf16-mixed", True, 835.5e12),
    ("NVIDIA H200", "32-true", True, 494.7e12), ("NVIDIA H200", "32-true", False, 66.9e12),
    ("NVIDIA H100 80GB HBM3", "16-mixed", True, 989.4e12), ("NVIDIA H100 80GB HBM3", "32-true", True, 494.7e12)])
def test_peaks_are_dense_exact_and_tf32_where_cudnn_uses_it(board, precision, tf32, peak, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: board)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    assert peak_flops(torch.device("cuda", 0), precision) == pytest.approx(peak)
    assert peak_flops(torch.device("cpu"), precision) is None


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
