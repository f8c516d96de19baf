"""Shared by the benchmarks: the vanilla tutorial recipe, the source pairs of a shard set, the default synthetic
dataset, running a child process while sampling its whole process tree (peak RSS, CPU use), and publishing results."""
from __future__ import annotations

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


class TreeMonitor:
    """Samples a process and all its descendants every `interval` s: peak resident memory and CPU seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.root = psutil.Process(pid)
        self.interval, self.peak_rss, self.cpu = interval, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu[proc.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

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
                         ("pytorch-lightning", "pytorch_lightning")):
        try:
            versions[name] = __import__(module, fromlist=["__version__"]).__version__
        except ImportError:
            versions[name] = None
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "versions": versions}


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
    path.with_suffix(".md").write_text(f"# {title}\n\nRun on {where}.\n\n{table}\n\nCommand: `{result['command']}`\n")
    return table


# --- the vanilla recipe, as tutorials teach it ---------------------------------------------------------------
def vanilla_loader(pairs, mean, std, batch_size, workers, size, augment="flip", scale=(0.5, 1.0)):
    """Pillow decode in the workers; crop (in crop mode), resize to `size`, flip and normalize there too."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from fastseg.loading.torch_backend import draw_crop

    class FolderDataset(Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            image = Image.open(pairs[i][0]).convert("RGB")
            mask = Image.open(pairs[i][1])
            box = draw_crop(np.random.default_rng(), *image.size, scale) if augment == "crop" else None
            if box is not None or (size and image.size != (size[1], size[0])):
                image = image.resize((size[1], size[0]), Image.BILINEAR, box=box, reducing_gap=None)
                mask = mask.resize((size[1], size[0]), Image.NEAREST, box=box)
            image, mask = np.asarray(image, np.float32), np.asarray(mask, np.int64)
            if np.random.rand() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            image = (image - mean) / std
            return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()), "mask": torch.from_numpy(mask.copy())}

    # pinned, as the tutorial recipe has it: on a GPU, .to(cuda, non_blocking=True) from pageable memory blocks
    return DataLoader(FolderDataset(), batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def train_pairs(shards) -> list[tuple[str, str]]:
    """(image, mask) source files of the train split, from the json member of each sample (on disk or in a
    bucket: read by offset through the index either way)."""
    from fastseg import storage
    from fastseg.format import open_set, parse_index
    from fastseg.loading.checks import check_shards

    pairs = []
    for path, index in zip(*check_shards(open_set(shards), "train", checksums=False)):
        for sample in parse_index(index.read_text(), str(index)):
            _, offset, size, _ = next(m for m in sample if m[0] == "json")
            if storage.is_remote(path):
                meta = json.loads(storage.read_range(path, offset, size))
            else:
                with open(path, "rb") as tar:
                    tar.seek(offset)
                    meta = json.loads(tar.read(size))
            pairs.append((meta["image"], meta["mask"]))
    return pairs


def default_dataset(tmp: Path) -> tuple[Path, Path]:
    from fastseg.shards import ShardOptions, shard
    from fastseg.shards.synthetic import generate

    data = generate(tmp / "synthetic", count=160)
    shard(data, tmp / "shards", ShardOptions(classes=data / "classes.json", progress=False))
    return data, tmp / "shards"


# --- peers: the loaders users would pick instead, each in its own idiom ------------------------------------------
def convert_peers(kinds: list[str], shards, peer_dir: Path, peer_python: str, workers: int) -> dict:
    """Each peer's own format (peer_dir/KIND) written from the train split's source files by `peer_python`, timed,
    with the process tree's peak memory, beside fastseg-shard making a set from the same files with as many workers
    (the peers' writers copy bytes; fastseg-shard decodes and checks every image and mask, converts the masks and
    takes the statistics); and the peers' versions and interpreter. A peer that fails is reported with its error."""
    here = Path(__file__).resolve().parent
    peers_py = str(here / "peers.py")
    found = {"versions": run_child([peers_py, "versions"], python=peer_python)[0], "conversion": {}}
    source = peer_dir / "source"  # the train split's files, linked into the images/ + masks/ layout
    for image, mask in train_pairs(shards):
        for kind, path in (("images", Path(image)), ("masks", Path(mask))):
            (source / kind).mkdir(parents=True, exist_ok=True)
            (source / kind / path.name).symlink_to(path.resolve())
    figures, monitor, _ = run_child([str(here / "shard_bench.py"), "--child", str(source),
                                     str(peer_dir / "fastseg-shard"), "--workers", str(workers)])
    figures.update(samples_per_s=round(figures["samples"] / figures["seconds"], 2), processes=workers,
                   peak_memory_mb=round(monitor.peak_rss / 1e6, 1), seconds=round(figures["seconds"], 3),
                   bytes_on_disk=sum(p.stat().st_size for p in (peer_dir / "fastseg-shard").iterdir()))
    found["conversion"]["fastseg-shard"] = figures
    for kind in kinds:
        try:
            figures, monitor, _ = run_child([peers_py, "convert", kind, "--shards", str(shards), "--out",
                                             str(peer_dir / kind), "--workers", str(workers)], python=peer_python)
            figures["peak_memory_mb"] = round(monitor.peak_rss / 1e6, 1)
        except RuntimeError as err:
            figures = {"error": str(err)}
        found["conversion"][kind] = figures
    return found


def peer_sample(image, mask, key, mean, std, recipe: int):
    """Every peer's per-sample work: the paired flip at the native size, normalized here (recipe 1) or left uint8
    (recipe 2); a CHW image tensor, an int64 mask, the sample's key. `image` is a PIL image, an array, or the CHW
    uint8 tensor LitData's torchvision decoder returns."""
    import torch

    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if np.random.rand() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if recipe == 1:
        image = (image.astype(np.float32) - mean) / std
    return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask.astype(np.int64)), key


def webdataset_loader(urls: list[str], mean, std, batch_size: int, workers: int, recipe: int, pin: bool = False,
                      ranks: bool = False):
    """webdataset's own pipeline over fastseg's shards (they are WebDataset tars): shard shuffle, a sample shuffle
    buffer, Pillow decoding, the paired flip at the native size, as its docs compose it. Recipe 1 normalizes each
    sample in the workers (the docs' way); recipe 2 hands uint8 out and normalizes the batch in the main process
    (timm's and fastseg's way), see `WebdatasetEpochs`. webdataset splits work by shard: give it at least as many
    train shards as workers (and, with `ranks`, shards split by torch.distributed rank too). Each sample keeps its
    key."""
    import webdataset as wds

    def sample(item):
        image = item["image.jpg"] if "image.jpg" in item else item["image.png"]
        return peer_sample(image, item["mask.png"], item["__key__"], mean, std, recipe)

    from PIL import Image

    def class_ids(data: bytes) -> np.ndarray:  # "pil" would make the mask RGB; keep its single channel
        return np.asarray(Image.open(io.BytesIO(data)))

    # from a bucket, webdataset's documented way: a pipe from the AWS CLI (which reads AWS_ENDPOINT_URL too)
    urls = [f"pipe:aws s3 cp --quiet {url} -" if url.startswith("s3://") else url for url in urls]
    dataset = (wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node if ranks else None,
                              empty_check=False)
               .shuffle(256).decode(wds.handle_extension("mask.png", class_ids), "pil").map(sample))
    return wds.WebLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                         pin_memory=pin)


class WebdatasetEpochs:
    """Each iteration is one epoch of the batch contract from a peer's loader: float32 N×3×H×W normalized, int64
    N×H×W masks. Recipe 2 normalizes here, in the main process, on `device` (on a GPU after a non-blocking copy from
    pinned memory, as timm's PrefetchLoader does)."""

    def __init__(self, loader, mean, std, recipe: int, device: str = "cpu"):
        import torch

        self.loader, self.recipe, self.device = loader, recipe, torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __iter__(self):
        for image, mask, keys in self.loader:
            image = image.to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            if self.recipe == 2:
                image = image.float().sub_(self.mean).div_(self.std)
            yield {"image": image, "mask": mask, "real": image.shape[0], "key": list(keys)}
