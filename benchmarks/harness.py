"""The benchmarks' harness, written once: running a child process while sampling its whole process tree (peak RSS,
CPU use), the machine's description, the Pillow decode limit, and publishing results (JSON and a Markdown table).
Every figure is a rate over timed rounds, taken side by side in one run; what is timed besides fastseg lives in
baselines.py (the tutorial DataLoader) and peers.py (the loaders users would pick instead)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil


class Sampling:
    """A `sample()` taken every `interval` s on a thread of its own, for as long as the `with` block runs; a sample
    that returns False ends the sampling."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> bool:
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set() and self.sample() is not False:
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class TreeMonitor(Sampling):
    """Samples a process and all its descendants every `interval` s: peak resident memory and CPU seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(interval)
        self.root = psutil.Process(pid)
        self.peak_rss, self.cpu = 0, {}

    def sample(self) -> bool:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        rss = 0
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                self.cpu[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        self.peak_rss = max(self.peak_rss, rss)
        return True

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def run_child(argv: list[str], timeout: float = 1800, python: str | None = None,
              env: dict | None = None) -> tuple[dict, TreeMonitor, float]:
    """Run a Python child (this interpreter, or `python`; this environment, or `env`) that prints one JSON object as
    its last stdout line; return it with the tree's figures."""
    start = time.perf_counter()
    proc = subprocess.Popen([python or sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    with TreeMonitor(proc.pid) as monitor:
        out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(err)
        last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "")
        raise RuntimeError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} exited with {proc.returncode}: {last[:400]}")
    return json.loads(out.strip().splitlines()[-1]), monitor, wall


def host() -> dict:
    import numpy
    import PIL
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                "pillow": PIL.__version__}
    for name, module in (("nvidia-dali", "nvidia.dali"), ("webdataset", "webdataset"),
                         ("pytorch-lightning", "pytorch_lightning"), ("albumentations", "albumentations"),
                         ("opencv", "cv2")):
        try:
            versions[name] = __import__(module, fromlist=["__version__"]).__version__
        except ImportError:
            versions[name] = None
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):  # the model's name, where Linux says it
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "versions": versions, "commit": commit()}


def provenance() -> dict:
    """What every results file records of where it came from: the machine (host) and the command that wrote it."""
    return {"host": host(), "command": " ".join(["python", *sys.argv])}


def commit() -> str | None:
    """The code a figure measured: the checkout's commit, "+changes" where its tracked code differs from it."""
    root = Path(__file__).parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        # results files and the pages rendered from them change as a suite runs: only code counts
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results", ":!README.md", ":!docs"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def decode_rate(pairs, rounds: int = 3, min_seconds: float = 2.0) -> dict:
    """Single-core Pillow decode rate of image + mask (files read into memory first), samples/s, timed like the
    loaders: `rounds` rounds of whole passes lasting at least `min_seconds` each; the median and every round."""
    import statistics

    from PIL import Image

    blobs = [(Path(i).read_bytes(), Path(m).read_bytes()) for i, m in pairs]
    rates = []
    for _ in range(rounds):
        start, done = time.perf_counter(), 0
        while not done or time.perf_counter() - start < min_seconds:
            for image, mask in blobs:
                np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
                np.asarray(Image.open(io.BytesIO(mask)))
            done += len(blobs)
        rates.append(done / (time.perf_counter() - start))
    return {"samples_per_s": statistics.median(rates), "rounds": [round(r, 2) for r in rates]}


def publish(rows: list[str], path, result: dict, title: str) -> str:
    """Print the Markdown table; with a path, also write the JSON and a short Markdown page beside it."""
    table = "\n".join(rows)
    print(table)
    if path is None:
        return table
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    h = result["host"]
    where = f"{h['cores']} cores of {h['cpu']}" + (f", GPU {h['gpu']}" if h.get("gpu") else " (no GPU)")
    code = f", code at {h['commit']}" if h.get("commit") else ""
    path.with_suffix(".md").write_text(f"# {title}\n\nRun on {where}{code}.\n\n{table}\n\n"
                                       f"Command: `{result['command']}`\n")
    return table
