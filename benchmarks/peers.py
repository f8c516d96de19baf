"""The loaders users would pick instead of fastseg, each in its own idiom, on the same samples and the same work as
loader_bench.py's loaders (which runs them through `--loaders litdata_r1 mosaic_r2 …`):

- LitData: `litdata.optimize()` with PIL values (a JPEG kept as its file bytes, PNG images and masks as raw pixels),
  then `StreamingDataset(transform=…)` + `StreamingDataLoader`;
- MosaicML Streaming: `MDSWriter(columns={"image": "jpeg" (or "png" for PNG sources), "mask": "png"})` (a JPEG's
  file bytes kept, a PNG image and the mask re-encoded as PNG), then a `StreamingDataset` whose `__getitem__` does
  the work + `StreamingDataLoader`;
- webdataset's own pipeline over fastseg's shards (they are WebDataset tars): webdataset_loader below.

They live in an environment of their own (benchmarks/peers_setup.sh says why), run as children by `--peer-python`.

Recipe 1 normalizes each sample in the workers (as the peers' docs do); recipe 2 hands uint8 out of the workers
and normalizes the batch in the main process (as timm's loader and fastseg's torch loader do).

    python benchmarks/peers.py convert litdata|mosaic --shards DIR --out DIR [--workers N]   (prints JSON)
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from harness import run_child
from baselines import train_pairs

FORMATS = ("litdata", "mosaic")  # the peers written in their own format, once per benchmark run
PEER_PYTHON = Path(__file__).parents[1] / ".peers-venv" / "bin" / "python"  # made by peers_setup.sh


# --- the peers' formats written beside fastseg-shard, in one run ----------------------------------------
def convert_peers(kinds: list[str], shards, peer_dir: Path, peer_python: str, workers: int) -> dict:
    """Each peer's own format (peer_dir/KIND) written from the train split's source files by `peer_python`, timed,
    with the process tree's peak memory, beside fastseg-shard making a set from the same files with as many workers
    (peer_dir/fastseg-shard-auto; the peers' writers copy bytes; fastseg-shard decodes and
    checks every image and mask, converts the masks and takes the statistics); and the peers' versions and
    interpreter. A peer that fails is reported with its error."""
    here = Path(__file__).resolve().parent
    peers_py = str(here / "peers.py")
    found = {"versions": run_child([peers_py, "versions"], python=peer_python)[0] if kinds else {}, "conversion": {}}
    source = peer_dir / "source"  # the train split's files, linked into the images/ + masks/ layout
    for image, mask in train_pairs(shards):
        for kind, path in (("images", Path(image)), ("masks", Path(mask))):
            (source / kind).mkdir(parents=True, exist_ok=True)
            (source / kind / path.name).symlink_to(path.resolve())
    out = peer_dir / "fastseg-shard-auto"
    figures, monitor, _ = run_child([str(here / "shard_bench.py"), "--child", str(source), str(out),
                                     "--workers", str(workers), "--store", "auto"])
    figures.update(samples_per_s=round(figures["samples"] / figures["seconds"], 2), processes=workers,
                   peak_memory_mb=round(monitor.peak_rss / 1e6, 1), seconds=round(figures["seconds"], 3),
                   bytes_on_disk=sum(p.stat().st_size for p in out.iterdir()), folder=str(out))
    found["conversion"]["fastseg-shard --store auto"] = figures
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
    (timm's and fastseg's way), see `PeerEpochs`. webdataset splits work by shard: give it at least as many
    train shards as workers (and, with `ranks`, shards split by torch.distributed rank too). Each sample keeps its
    key."""
    import webdataset as wds

    from fastseg.format import IMAGE_EXTS, MASK_EXT

    def sample(item):
        image = next(item[ext] for ext in IMAGE_EXTS if ext in item)
        return peer_sample(image, item[MASK_EXT], item["__key__"], mean, std, recipe)

    from PIL import Image

    def class_ids(data: bytes) -> np.ndarray:  # "pil" would make the mask RGB; keep its single channel
        return np.asarray(Image.open(io.BytesIO(data)))

    # from a bucket, webdataset's documented way: a pipe from the AWS CLI (which reads AWS_ENDPOINT_URL too)
    urls = [f"pipe:aws s3 cp --quiet {url} -" if url.startswith("s3://") else url for url in urls]
    dataset = (wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node if ranks else None,
                              empty_check=False)
               .shuffle(256).decode(wds.handle_extension(MASK_EXT, class_ids), "pil").map(sample))
    return wds.WebLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                         pin_memory=pin)


def albumentations_loader(pairs, mean, std, batch_size: int, workers: int, size, mmseg: dict, recipe: int,
                          pin: bool = False):
    """MMSegmentation's recipe with albumentations, as its segmentation examples compose it: OpenCV decoding and
    transforms per sample in DataLoader workers over the source files. Its nearest equivalents: RandomScale (the
    ratio, relative to each image: the base size when a set has one image size, as DAVIS has), RandomCrop padding
    where the image is smaller (0 and ignore; before normalizing, so the image's padding is not 0 afterwards), a
    retry loop for cat_max_ratio (albumentations has none), HorizontalFlip, RandomBrightnessContrast (brightness and
    contrast, each p = 0.5) and HueSaturationValue (hue ±18 on OpenCV's scale, saturation shifted ±50% of its
    range: additive where MMSegmentation multiplies). Recipe 1 normalizes in the workers (A.Normalize), recipe 2
    hands uint8 out (PeerEpochs normalizes the batch)."""
    import albumentations as A
    import cv2
    import torch
    from torch.utils.data import DataLoader, Dataset

    from fastseg.loading import draws
    from fastseg.loading import recipe as rules

    cv2.setNumThreads(0)  # one thread a worker, as the DataLoader examples set it
    low, high = mmseg["ratio_range"]
    scale = A.RandomScale(scale_limit=(low - 1, high - 1), interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST, p=1.0)
    crop = A.RandomCrop(*size, pad_if_needed=True, pad_position="top_left", border_mode=cv2.BORDER_CONSTANT,
                        fill=0, fill_mask=255)
    colour = [A.RandomBrightnessContrast(brightness_limit=draws.BRIGHTNESS / 255, contrast_limit=0, p=0.5),
              A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.5, p=0.5),
              A.HueSaturationValue(hue_shift_limit=draws.HUE, sat_shift_limit=50, val_shift_limit=0, p=0.5)]
    finish = A.Compose([A.HorizontalFlip(p=0.5), *(colour if mmseg["photometric"] else []),
                        *([A.Normalize(mean=mean, std=std, max_pixel_value=1.0)] if recipe == 1 else [])])

    class AlbumentationsDataset(Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            image = cv2.cvtColor(cv2.imread(pairs[i][0], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            mask = cv2.imread(pairs[i][1], cv2.IMREAD_UNCHANGED)
            scaled = scale(image=image, mask=mask)
            for _ in range(draws.CROP_TRIES):
                out = crop(**scaled)
                if mmseg["cat_max_ratio"] >= 1 or rules.acceptable(out["mask"], mmseg["cat_max_ratio"]):
                    break
            out = finish(**out)
            return (torch.from_numpy(out["image"].transpose(2, 0, 1).copy()),
                    torch.from_numpy(out["mask"].astype(np.int64)), Path(pairs[i][0]).stem)

    return DataLoader(AlbumentationsDataset(), batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin)


class PeerEpochs:
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


def _litdata_sample(pair):
    from PIL import Image

    image, mask = pair
    return {"image": Image.open(image), "mask": Image.open(mask), "key": Path(image).stem}


def convert(kind: str, pairs: list[tuple[str, str]], out: Path, workers: int) -> dict:
    """Each peer's own writer over the source files; wall time and size on disk (the caller samples memory)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    if kind == "litdata":
        import litdata

        litdata.optimize(fn=_litdata_sample, inputs=pairs, output_dir=str(out), num_workers=workers,
                         chunk_bytes="64MB", verbose=False)
        processes = workers
    else:  # MDSWriter is one writer in one process: Mosaic's own docs parallelize by writing several sets
        from PIL import Image
        from streaming import MDSWriter

        # the image column by what the sources are: "jpeg" keeps a JPEG's bytes; a PNG source stays lossless PNG
        jpeg = all(Path(image).suffix.lower() in (".jpg", ".jpeg") for image, _ in pairs)
        columns = {"image": "jpeg" if jpeg else "png", "mask": "png", "key": "str"}
        with MDSWriter(out=str(out), columns=columns, size_limit="64mb") as writer:
            for image, mask in pairs:
                writer.write({"image": Image.open(image), "mask": Image.open(mask), "key": Path(image).stem})
        processes = 1
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"seconds": round(seconds, 3), "samples": len(pairs), "samples_per_s": round(len(pairs) / seconds, 2),
            "bytes_on_disk": size, "processes": processes}


def _litdata_transform(sample, mean, std, recipe):  # a module's function, bound by partial: the workers pickle it
    return peer_sample(sample["image"], sample["mask"], sample["key"], mean, std, recipe)


def loader(kind: str, folder, mean, std, batch_size: int, workers: int, recipe: int, pin: bool = False):
    """The peer's own loader, built once; shuffled; persistent workers; pinned memory when a GPU takes the batch.
    `folder` may be an s3:// URL: each peer then streams it into an empty cache of its own (AWS_ENDPOINT_URL, where
    set, names the S3-compatible server, as for fastseg)."""
    import os
    import tempfile

    remote = str(folder).startswith("s3://")
    cache = tempfile.mkdtemp(prefix=f"{kind}-cache-") if remote else None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") if remote else None
    if kind == "litdata":
        import litdata

        if (endpoint or "").startswith("http://"):
            # LitData (0.2.76) fetches chunks through obstore with client options of its own, which refuse a
            # plain-http endpoint such as a local test server's ("builder error"; AWS_ALLOW_HTTP does not reach
            # them): there it takes its boto3 path, the one it uses where obstore is not installed
            import litdata.streaming.downloader as downloader

            downloader._OBSTORE_AVAILABLE = False

        options = {"storage_options": {"endpoint_url": endpoint}} if endpoint else {}
        dataset = litdata.StreamingDataset(str(folder), cache_dir=cache, shuffle=True,
                                           transform=functools.partial(_litdata_transform, mean=mean, std=std,
                                                                       recipe=recipe), **options)
        return litdata.StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           persistent_workers=workers > 0, pin_memory=pin)
    import streaming
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()

    class Segmentation(streaming.StreamingDataset):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            return peer_sample(sample["image"], sample["mask"], sample["key"], mean, std, recipe)

    if endpoint:
        os.environ["S3_ENDPOINT_URL"] = endpoint  # Mosaic's name for it
    where = {"remote": str(folder), "local": cache} if remote else {"local": str(folder)}
    dataset = Segmentation(**where, shuffle=True, batch_size=batch_size)
    return streaming.StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         persistent_workers=workers > 0, pin_memory=pin)


# what decodes what, in each peer's idiomatic path (LitData uses torchvision for JPEG where it is installed)
DECODERS = {"litdata": "JPEG: torchvision.io.decode_jpeg; PNG images and masks: stored as raw pixels by LitData's "
                       "PIL serializer (nothing to decode)",
            "mosaic": "JPEG and PNG: Pillow (MDS 'jpeg' and 'png' columns)",
            "webdataset": "JPEG and PNG: Pillow (.decode('pil'))"}


def versions() -> dict:
    import platform

    found = {"python": platform.python_version(), "interpreter": sys.executable, "decoders": DECODERS}
    for name, module in (("litdata", "litdata"), ("mosaicml-streaming", "streaming"), ("torch", "torch"),
                         ("torchvision", "torchvision"), ("numpy", "numpy"), ("webdataset", "webdataset")):
        try:
            found[name] = __import__(module).__version__
        except ImportError as err:
            found[name] = f"not installed ({err})"
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["convert", "versions"])
    p.add_argument("kind", nargs="?", choices=FORMATS)
    p.add_argument("--shards", help="the fastseg set whose train split gives the source files")
    p.add_argument("--out", type=Path)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    if args.action == "versions":
        print(json.dumps(versions()))
        return 0
    print(json.dumps(convert(args.kind, train_pairs(args.shards), args.out, args.workers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
