"""fastseg-predict --checkpoint CKPT (--input DIR_OR_FILE --out DIR | --shards DIR --split val): masks or metrics."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import FastsegError
from ..loading.config import BACKENDS
from ..loading.contract import Normalize
from ..shards.pairs import IMAGE_SUFFIXES
from ..storage import location
from . import configs, run_cli
from .evaluation import add_evaluation_arguments, scoring_from


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastseg-predict", description=__doc__)
    p.add_argument("--checkpoint", type=location, required=True,
                   help="a fastseg-train checkpoint: a file, or an object in a store (s3://, gs://, az://, https://)")
    p.add_argument("--input", type=Path, help="an image, or a folder of images")
    p.add_argument("--out", type=Path, required=True, help="where masks (or metrics.json) go")
    p.add_argument("--overlay", action="store_true", help="also write the mask blended over each image")
    p.add_argument("--shards", type=location, help="evaluate on a shard split instead of predicting files")
    p.add_argument("--split", default="val")
    p.add_argument("--loader", choices=BACKENDS, default="torch")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, help="loader threads/processes for --shards (default: the cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_evaluation_arguments(p)
    configs.add_config_flags(p)
    return p


def load_module(path, device: str):
    from ..training.checkpoints import local_checkpoint
    from ..training.module import load_segmodule

    path = local_checkpoint(path)
    if not path.is_file():
        raise FastsegError(f"{path}: no such checkpoint (fastseg-train writes OUT/checkpoints/best.ckpt)")
    try:
        module = load_segmodule(path, device)
    except Exception as err:
        raise FastsegError(f"{path}: not a fastseg checkpoint ({err})") from err
    return module.eval().to(device)


def find_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FastsegError(f"{path}: no such file or folder")
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise FastsegError(f"{path}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


@torch.no_grad()
def predict_file(module, path: Path, device: str, scoring) -> tuple[np.ndarray, np.ndarray]:
    """(upright RGB image, class indices of the same size), predicted as validation scores: the image resized as
    scoring says (to the training size, or with --eval-size to fit that scale, aspect kept), run whole or window by
    window, and its logits, not a class map, resized (bilinear) to the image's own size before the argmax, so edges
    are as fine as the image's pixels."""
    from ..loading.config import keep_ratio_size
    from ..training.losses import predict
    from ..training.scoring import label_logits

    try:
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    except Exception as err:
        raise FastsegError(f"{path}: cannot decode the image ({err})") from err
    h = module.hparams
    rows, cols = image.size[1], image.size[0]
    height, width = keep_ratio_size(rows, cols, scoring.size) if scoring.size else tuple(h.image_size)
    pixels = np.array(image.resize((width, height), Image.BILINEAR, reducing_gap=None))  # writable, for torch
    tensor = Normalize(h.mean, h.std)(torch.from_numpy(pixels).permute(2, 0, 1)[None]).to(device)
    (_, logits, _), = label_logits(module, {"image": tensor, "sizes": [(height, width, rows, cols)]}, scoring,
                                   module.stride)
    return np.asarray(image), predict(logits)[0].byte().cpu().numpy()


def save_mask(indices: np.ndarray, colors: list[list[int]], path: Path) -> None:
    from ..training.visualize import palette_image

    if len(colors) == 2:
        Image.fromarray((indices * 255).astype(np.uint8)).save(path)  # binary: 0/255, as such masks usually come
    else:
        palette_image(indices, colors).save(path)


def predict_files(module, args, scoring) -> None:
    from tqdm import tqdm

    from ..training.visualize import overlay

    images = find_images(args.input)
    args.out.mkdir(parents=True, exist_ok=True)
    colors = module.hparams.class_colors
    base = args.input if args.input.is_dir() else args.input.parent
    for path in tqdm(images, unit="image", desc="predicting"):
        picture, indices = predict_file(module, path, args.device, scoring)
        name = path.relative_to(base).with_suffix("")
        target = args.out / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        save_mask(indices, colors, target)
        if args.overlay:
            Image.fromarray(overlay(picture, indices, colors)).save(args.out / f"{name}_overlay.jpg", quality=90)
    print(f"wrote {len(images)} mask(s) to {args.out}")


def evaluate(module, args, scoring) -> None:
    from tqdm import tqdm

    from ..loading.make import make_loader
    from ..training.callbacks import metrics_report, write_report
    from ..training.scoring import score_loader
    from ..training.visualize import plot_confusion

    h = module.hparams
    loader = make_loader(args.shards, split=args.split, backend=args.loader, batch_size=args.batch_size,
                         augment=False, device=args.device, workers=args.workers,
                         **scoring.loader_options(tuple(h.image_size)))
    found = score_loader(module, tqdm(loader, unit="batch", desc=f"evaluating {args.split}"), scoring)
    args.out.mkdir(parents=True, exist_ok=True)
    report = metrics_report(found, h.class_names)
    report.update(scoring.describe(tuple(h.image_size)))
    report["confusion"] = found["confusion"].tolist()  # [true][predicted] pixel counts
    write_report(args.out / "metrics.json", report)
    plot_confusion(args.out / "confusion.png", found["confusion"].numpy(), h.class_names)
    print(f"confusion matrix → {args.out / 'confusion.png'}")


def main(argv: list[str] | None = None) -> int:
    args = configs.read(build_parser(), argv)
    if args is None:
        return 0
    if (args.input is None) == (args.shards is None):
        raise FastsegError("give --input (images to predict) or --shards (a split to evaluate), one of them")
    scoring = scoring_from(args)  # the flags checked before the checkpoint is read
    module = load_module(args.checkpoint, args.device)
    scoring = scoring.with_default_size(module.scoring.size)  # as its training validated
    if args.shards:
        evaluate(module, args, scoring)
    else:
        predict_files(module, args, scoring)
    return 0


def entry() -> None:
    sys.exit(run_cli("fastseg-predict", main))


if __name__ == "__main__":
    entry()
