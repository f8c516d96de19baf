"""A small realistic synthetic segmentation set: textured shapes on textured backgrounds, JPEG images, PNG masks.

    python -m fastseg.shards.synthetic OUT [--count 200] [--seed 0]

Classes: 0 background, 1 disk, 2 box, 3 triangle. Images come in two sizes, like real folders often do.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASSES", "generate"]

CLASSES = [("background", [0, 0, 0]), ("disk", [230, 25, 75]), ("box", [60, 180, 75]), ("triangle", [0, 130, 200])]
SIZES = [(320, 240), (288, 288)]


def _texture(rng: np.random.Generator, width: int, height: int, tint=None, period=None) -> np.ndarray:
    """Smooth colour noise plus stripes: something for JPEG and the network to chew on. Objects get their class's
    tint and stripe scale (as real objects differ from their surroundings); the background varies freely."""
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    y, x = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), period or rng.uniform(6, 24)
    stripes = 30 * np.sin((x * np.cos(angle) + y * np.sin(angle)) / period * 2 * np.pi)
    if tint is not None:
        smooth = 0.45 * smooth + 0.55 * np.array(tint, np.float32)
    return np.clip(smooth + stripes[..., None] + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def make_sample(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    width, height = SIZES[rng.integers(len(SIZES))]
    image = Image.fromarray(_texture(rng, width, height))
    mask = Image.new("L", (width, height), 0)
    for _ in range(rng.integers(2, 5)):
        cls = int(rng.integers(1, len(CLASSES)))
        r = int(rng.integers(min(width, height) // 10, min(width, height) // 4))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        shape = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(shape)
        if cls == 1:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        elif cls == 2:
            draw.rectangle([cx - r, cy - int(r * 0.7), cx + r, cy + int(r * 0.7)], fill=255)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=255)
        period = 4.0 + 4.0 * cls + rng.uniform(-1, 1)
        image.paste(Image.fromarray(_texture(rng, width, height, CLASSES[cls][1], period)), (0, 0), shape)
        mask.paste(cls, (0, 0), shape)
    return image.filter(ImageFilter.GaussianBlur(0.6)), mask


def generate(out: Path, count: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = make_sample(rng)
        image.save(out / "images" / f"synth_{i:05d}.jpg", quality=90)
        mask.save(out / "masks" / f"synth_{i:05d}.png")
    (out / "classes.json").write_text(json.dumps([{"name": n, "color": c} for n, c in CLASSES], indent=1) + "\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    generate(args.out, args.count, args.seed)
    print(f"wrote {args.count} image/mask pairs to {args.out} (classes in {args.out / 'classes.json'})")


if __name__ == "__main__":
    main()
