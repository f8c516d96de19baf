"""Exact resume: a run killed mid-epoch and resumed with --resume auto trains on exactly the batches an
uninterrupted run sees, on every rank, with both loaders, and ends with the same metrics."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastseg.training.checkpoints import AtomicCheckpointIO

from .conftest import split_shards

STEPS = 8  # per epoch: 16 training samples, batch 2 on one rank or batch 1 on each of two
EVERY = 3  # --checkpoint-every: steps 9, 12 and 15 fall inside the second epoch (steps 9-16)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return split_shards(tmp_path_factory.mktemp("resume"), size=(64, 64), image_ext="jpg", val=5)


def command(shards: Path, out: Path, backend: str, world: int, *extra) -> list[str]:
    return [sys.executable, "-m", "fastseg.cli.train", "--shards", str(shards), "--out", str(out), "--epochs", "3",
            "--loader", backend, "--devices", str(world), "--batch-size", str(2 // world), "--width", "8",
            "--accelerator", "cpu", "--precision", "32-true", "--workers", "1", "--no-checksums", "--augment", "crop",
            "--log-every", "1", "--checkpoint-every", str(EVERY), "--log-batch-keys", *extra]


def steps_seen(out: Path, rank: int) -> list[dict]:
    lines = (out / "batches" / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def final_per_step(records: list[dict]) -> dict[int, list[str]]:
    """The keys each global step trained on; where a resumed run redid a step, the redo counts."""
    return {r["step"]: r["keys"] for r in records}


# Two of the four combinations, to keep the suite short: DALI on 2 ranks (per-rank pipeline checkpoints gathered
# into one file) and the torch loader on 1; each backend's restore alone is tested on both in test_loading.py.
@pytest.mark.slow
@pytest.mark.parametrize("backend,world", [("dali", 2), ("torch", 1)])
def test_a_killed_run_resumes_with_exactly_the_batches_of_an_uninterrupted_one(backend, world, shards, tmp_path,
                                                                                capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    done = subprocess.run(command(shards, a, backend, world), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(command(shards, b, backend, world), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill it inside the second epoch, after step 12
        if (b / "batches/rank0.jsonl").exists() and any(r["step"] > 12 for r in steps_seen(b, 0)):
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = [len(steps_seen(b, rank)) for rank in range(world)]
    saved = torch.load(b / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    at = saved["global_step"]
    assert saved["epoch"] == 1 and at % STEPS, f"want a mid-epoch checkpoint of the second epoch, got step {at}"
    assert not (b / "metrics.json").exists()

    resumed = subprocess.run(command(shards, b, backend, world, "--resume", "auto"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from a checkpoint that ended before the epoch ended" not in resumed.stderr
    for rank in range(world):
        records = steps_seen(b, rank)
        assert records[before_kill[rank]]["step"] == at + 1  # the resumed run began with the exact next batch
        uninterrupted = final_per_step(steps_seen(a, rank))
        assert sorted(uninterrupted) == list(range(1, 3 * STEPS + 1))
        assert final_per_step(records) == uninterrupted  # every step, before and after the kill, same samples
    metrics_a, metrics_b = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    for key in ("val_miou", "val_dice", "val_pixel_acc", "val_precision", "val_recall"):
        assert metrics_b[key] == pytest.approx(metrics_a[key], abs=1e-6)
    for name, iou in metrics_a["per_class_iou"].items():
        assert metrics_b["per_class_iou"][name] == pytest.approx(iou, abs=1e-6, nan_ok=True)

    if world == 1:  # another world size, batch size, loader or augmentation is refused before anything runs
        from fastseg.cli import run_cli
        from fastseg.cli.train import main

        other = "dali" if backend == "torch" else "torch"
        for extra, message in ((["--batch-size", "4"], "written with batch size 2; this run has batch size 4. "
                                                       "Resume with --batch-size 2"),
                               (["--loader", other], f"loader {backend}; this run has loader {other}"),
                               (["--augment", "flip"], "Resume with --augment crop"),
                               (["--devices", "2"], "Resume with --devices/--num-nodes giving 1")):
            capsys.readouterr()
            argv = command(shards, b, backend, world, "--resume", "auto")[3:] + extra  # in this process
            assert run_cli("fastseg-train", main, argv) == 1
            assert message in capsys.readouterr().err


SLOW_PICKLE = """
import sys, time, torch
from fastseg.training.checkpoints import AtomicCheckpointIO

class Slow:  # pickling it takes a while, so the test can kill the writer mid-write
    def __reduce__(self):
        time.sleep(60)
        return (Slow, ())

AtomicCheckpointIO().save_checkpoint({"version": 2, "weights": torch.ones(1 << 20), "slow": Slow()}, sys.argv[1])
"""


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_one(tmp_path):
    target = tmp_path / "checkpoints/last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"version": 1}, target)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PICKLE, str(target)])
    deadline = time.time() + 60
    while not list(target.parent.glob(".last.ckpt.partial-*")) and time.time() < deadline:
        time.sleep(0.01)
    partial = next(target.parent.glob(".last.ckpt.partial-*"))
    time.sleep(0.2)  # well into the write: the tensor is out, the slow object is being pickled
    proc.kill()
    proc.wait()
    assert torch.load(target, weights_only=False) == {"version": 1}  # the previous checkpoint, whole
    AtomicCheckpointIO().save_checkpoint({"version": 3}, target)  # the next save sweeps the dead writer's part
    assert not partial.exists() and torch.load(target, weights_only=False) == {"version": 3}


# --- runs that stop early: one line, the way to continue, the usual exit status -------------------------------
def wait_for_step(out: Path, rank: int, step: int, proc, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if (out / f"batches/rank{rank}.jsonl").exists() and any(r["step"] >= step for r in steps_seen(out, rank)):
            return
        time.sleep(0.01)
    raise AssertionError(f"the run did not reach step {step} (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sent,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_write_the_checkpoint_and_say_how_to_continue(sent, status, shards, tmp_path):
    out = tmp_path / "run"
    argv = command(shards, out, "torch", 1)
    argv[argv.index("--checkpoint-every") + 1] = "100"  # only the interruption writes mid-epoch
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, 0, 11, proc)  # inside the second epoch
    proc.send_signal(sent)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == status, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("fastseg-train:")]
    assert len(lines) == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert f"wrote {out / 'checkpoints/last.ckpt'}" in lines[0] and lines[0].endswith("--resume auto")
    saved = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and saved["global_step"] > STEPS  # the position reached, not the last epoch's end
    resumed = subprocess.run(argv + ["--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_seen(out, 0)[-1]["step"] == 3 * STEPS


@pytest.mark.slow
def test_a_rank_that_dies_is_named_with_the_way_to_continue(shards, tmp_path):
    import psutil

    out = tmp_path / "ddp"
    argv = command(shards, out, "torch", 2)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, 1, 10, proc)
    rank1 = next(p for p in psutil.Process(proc.pid).children() if "fastseg.cli.train" in " ".join(p.cmdline()))
    rank1.kill()  # as the OOM killer would
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode not in (0, None)
    lines = [line for line in err.splitlines() if line.startswith("fastseg-train:")]
    assert len(lines) == 1 and "Traceback" not in err and "GLHF" not in err, err[-3000:]
    assert "rank 1 was killed by signal 9" in lines[0] and f"{out / 'checkpoints/last.ckpt'}" in lines[0]
    command_line = lines[0].partition("continue with: ")[2]
    assert command_line.startswith("fastseg-train ") and command_line.endswith("--resume auto")
    assert list((out / "logs").glob("error-rank0.log"))  # the traceback, kept for whoever wants it
    resumed = subprocess.run([sys.executable, "-m", "fastseg.cli.train", *shlex.split(command_line)[1:]],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "sync_dist" not in resumed.stderr  # the meter's figures are reduced over ranks, and say so
