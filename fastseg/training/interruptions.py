"""When a run stops early: Ctrl-C, SIGTERM (what SLURM and Kubernetes send before they kill a job) or a lost rank.

`Interruption` is a callback: on Ctrl-C or SIGTERM during training it writes `last.ckpt` at the exact position
reached (the loaders resume from any batch), and remembers what happened so that fastseg-train can say it in one
line and exit 130 or 143, the exit statuses shells give those signals. On rank 0 of a run whose ranks Lightning
launched it also watches the other ranks' processes, so that a rank that dies is named. `lost_rank()` recognises
the error a collective raises on the ranks that are left, so that it too becomes one line instead of gloo's or
NCCL's traceback.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from ..errors import FastsegError
from .checkpoints import read_checkpoint

EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal number, as shells report them

# what a collective says on the surviving ranks when a peer process is gone (gloo, NCCL, the TCP store)
_LOST_PEER = re.compile(r"connection reset by peer|connection closed by peer|broken pipe|connection refused|"
                        r"timed out|timeout|socket closed|nccl (error|communicator was aborted)|"
                        r"remote process exited|peer .* (closed|unreachable)", re.IGNORECASE)


@dataclass
class Stopped:
    """What stopped the run, and where its last checkpoint stands."""

    signal: str  # "SIGINT" or "SIGTERM"
    exit_code: int
    checkpoint: Path | None  # written at the interruption, or None where training had not started a step


class Interruption(pl.Callback):
    """On Ctrl-C or SIGTERM while training, write `folder/last.ckpt` at the position reached; keep what happened in
    `stopped`. During validation or the sanity check the last epoch's checkpoint is left as it is: its position
    (the end of that epoch) is the one to continue from.

    `on_lost(rank, returncode)` is called (from a watch thread, on rank 0) if a rank that Lightning launched dies
    and the run has not failed by itself `grace` seconds later; it should say so and end the process."""

    def __init__(self, folder: Path, on_lost: Callable[[int, int], None] | None = None, grace: float = 20.0):
        self.folder, self.on_lost, self.grace = folder, on_lost, grace
        self.stopped: Stopped | None = None
        self.lost: tuple[int, int] | None = None  # (rank, exit status) of a launched rank that died
        self._watch: threading.Thread | None = None
        self._sigint = False  # a Ctrl-C waiting for the step to end
        self._previous = None  # the SIGINT handler before training

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        # Lightning's own watch over the processes it launched SIGKILLs this one within 5 s of a child's death,
        # before the failing collective can say anything. It polls the launcher's `procs` list: this one takes the
        # children over (the launcher keeps a copy for forwarding signals) and waits a grace period instead.
        procs = getattr(trainer.strategy.launcher, "procs", None)
        if trainer.global_rank != 0 or not procs or self._watch is not None:
            return
        children = list(procs)
        trainer.strategy.launcher.procs = list(children)
        procs.clear()
        self._watch = threading.Thread(target=self._watch_ranks, args=(children,), daemon=True, name="fastseg-ranks")
        self._watch.start()

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # one process: a Ctrl-C during a training step lets the step finish (the checkpoint then holds whole steps);
        # a second Ctrl-C, or one outside a step, interrupts at once
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._sigint = False
            self._previous = signal.getsignal(signal.SIGINT)

            def at_step_end(signum, frame):
                if self._sigint or not trainer.training:
                    raise KeyboardInterrupt
                self._sigint = True

            signal.signal(signal.SIGINT, at_step_end)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        if self._sigint:
            raise KeyboardInterrupt
        # Lightning stops a single process only at the end of the epoch after a SIGTERM (under DDP it broadcasts the
        # signal every step and stops all ranks at once); a scheduler's grace period is shorter than an epoch
        if trainer.world_size == 1 and trainer.received_sigterm:
            raise SIGTERMException()

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _watch_ranks(self, children: list) -> None:
        while self.lost is None:
            time.sleep(0.5)
            for rank, proc in enumerate(children, start=1):  # the launcher starts local ranks 1, 2, … in order
                if proc.poll():
                    self.lost = (rank, proc.returncode)
                    break
            else:
                if all(proc.returncode == 0 for proc in children):
                    return
        time.sleep(self.grace)  # the main thread normally fails on its next collective and says so first
        for proc in children:
            if proc.poll() is None:
                proc.kill()
        if self.on_lost is not None:
            self.on_lost(*self.lost)
        os._exit(1)

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            name, code = "SIGINT", EXIT_SIGINT
        elif isinstance(exception, SIGTERMException):
            name, code = "SIGTERM", EXIT_SIGTERM
        else:
            return
        written = None
        # Ctrl-C reaches every rank at a different point, so only a single process may take the collective path
        # of a save; SIGTERM is broadcast by Lightning and raised on all ranks at the same step
        together = trainer.world_size == 1 or code == EXIT_SIGTERM
        if trainer.training and not trainer.sanity_checking and together and trainer.global_step > 0:
            written = self.folder / "last.ckpt"
            trainer.save_checkpoint(written)
        self.stopped = Stopped(name, code, written)


def rank_gone(lost: tuple[int, int] | None) -> str:
    """How a lost rank is named in the message: which one, and how it ended where that is known."""
    if lost is None:
        return "another rank went away (a process or node stopped)"
    rank, status = lost
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"rank {rank} {how}"


def lost_rank(error: BaseException) -> bool:
    """Whether an error is a collective failing because another rank (process or node) went away."""
    dist_error = getattr(torch.distributed, "DistBackendError", RuntimeError)
    return (isinstance(error, (RuntimeError, dist_error, ConnectionError, TimeoutError))
            and torch.distributed.is_available() and torch.distributed.is_initialized()
            and bool(_LOST_PEER.search(str(error))))


def checkpoint_position(path: Path) -> str | None:
    """'epoch E, step S' of a checkpoint, read without loading its weights; None if it cannot be read."""
    try:
        checkpoint = read_checkpoint(path)
    except FastsegError:  # a checkpoint being replaced, or none: the caller says there is none
        return None
    return f"epoch {checkpoint.get('epoch', '?')}, step {checkpoint.get('global_step', '?')}"


# --- what fastseg-train says when a run stops early ---------------------------------------------------------
def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same flags, with --resume auto and without --overwrite."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg == "--overwrite" or arg.startswith("--resume="):
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        kept.append(arg)
    return shlex.join(["fastseg-train", *kept, "--resume", "auto"])


def last_checkpoint(out: Path) -> str:
    path = out / "checkpoints" / "last.ckpt"
    position = checkpoint_position(path) if path.exists() else None
    if position is None:
        return "no checkpoint was written yet, so the run starts over"
    return f"the last checkpoint is {path} ({position})"


def lost_line(out: Path, argv: list[str], lost: tuple[int, int] | None, log: Path | None = None) -> str:
    """The one line for a run that lost a rank: which, where the traceback is, where to continue from and how."""
    where = f" (the traceback is in {log})" if log else ""
    return (f"fastseg-train: error: {rank_gone(lost)}, so training stopped{where}; {last_checkpoint(out)}; "
            f"continue with: {resume_command(argv)}")


def stopped_early(out: Path, argv: list[str], guard: Interruption, trainer, err: BaseException) -> int:
    """One line for a run that stopped early (a signal, or a lost rank), and its exit status; any other error is
    raised as it is."""
    if guard.stopped is not None:
        stopped = guard.stopped
        if trainer.is_global_zero:
            saved = f"wrote {stopped.checkpoint}" if stopped.checkpoint else last_checkpoint(out)
            print(f"fastseg-train: {stopped.signal}: stopped; {saved}; continue with: {resume_command(argv)}",
                  file=sys.stderr, flush=True)
        return stopped.exit_code
    if isinstance(err, Exception) and (guard.lost or lost_rank(err)):
        log = out / "logs" / f"error-rank{trainer.global_rank}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(err)))
        print(lost_line(out, argv, guard.lost, log), file=sys.stderr, flush=True)
        return 1
    raise err
