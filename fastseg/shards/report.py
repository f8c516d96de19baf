"""A set explains itself: `report.html`, one self-contained page (its pictures inline) of any shard set, on disk or
in a bucket, written by fastseg-shard beside the manifest or by `fastseg-report SHARDS` for any set.

Per split: the class pixel shares and the share of images holding each class (bars in the classes' own colours),
the image sizes, the storage and bytes on disk, and a grid of random samples with their masks overlaid; on top,
the warnings of the set's checks (checks.py). It reads the manifest, the indexes and a bounded number of samples per
split (members by offset), never the whole set, and says so. A set written before the checks gets its class
shares from the masks of those samples, and says that too.
"""
from __future__ import annotations

import base64
import html
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image

from .. import fetching
from ..format import REPORT, sample_members
from ..sets import ShardSet, check_shards, index_samples, open_set
from ..pictures import colorize, member_pixels

THUMB_WIDTH = 200  # pixels of each sample's image (and of its mask beside it) in the grid
BAR_WIDTH = 220  # pixels of a bar at 100%


def write_report(shards, out: Path | None = None, samples: int = 12, seed: int = 0, name: str | None = None) -> Path:
    """The report of the set at `shards` (a folder, an object-store prefix or an opened ShardSet), to `out` (default:
    report.html in the set's folder; for a bucket, in the current folder); `samples` random samples per split;
    `name`: what the page calls the set (default: where it is)."""
    shard_set = open_set(shards)
    root = shard_set.root
    out = Path(out) if out is not None else (Path(root) if isinstance(root, Path) else Path(".")) / REPORT
    page = render(shard_set, samples, seed, name or str(root))
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(page)
    partial.replace(out)  # never half a page under the final name
    return out


def render(shard_set: ShardSet, samples: int, seed: int, name: str) -> str:
    manifest = shard_set.manifest
    statistics = manifest.statistics
    drawn = {split: _samples(shard_set, split, samples, seed) for split in manifest.splits}
    parts = [_header(shard_set, samples, name)]
    warnings = statistics.get("warnings")
    if warnings is None:
        parts.append("<h2>Warnings</h2><p class=note>This set was written before fastseg-shard checked sets for "
                     "duplicates, leaks between splits, absent or rare classes and empty masks; shard it again to "
                     "see them.</p>")
    else:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in warnings)
        parts.append(f"<h2>Warnings ({len(warnings)})</h2>" + (f"<ul class=warnings>{items}</ul>" if warnings else
                                                                  "<p>None: no duplicate, leak, absent or rare "
                                                                  "class, or empty mask found.</p>"))
    pixels, images, source = _class_counts(manifest, drawn)
    parts.append(f"<h2>Classes</h2><p class=note>{source}</p>")
    for split in manifest.splits:
        parts.append(f"<h3>{html.escape(split)}</h3>" + _bars(manifest.classes, pixels.get(split, {}),
                                                            images.get(split, {}), images.get(f"{split}#", 0)))
    parts.append("<h2>Image sizes</h2>" + _sizes(manifest))
    parts.append("<h2>Samples</h2>")
    for split, rows in drawn.items():
        cells = "".join(f"<figure><img src='data:image/jpeg;base64,{picture}' alt='{html.escape(key)}'>"
                        f"<figcaption>{html.escape(key)}</figcaption></figure>" for key, picture, _ in rows)
        parts.append(f"<h3>{html.escape(split)}: {len(rows)} random sample(s), image | mask</h3>"
                     f"<div class=grid>{cells}</div>")
    legend = "".join(f"<span class=swatch style='background:{_css(c.color)}'></span>{html.escape(c.name)} "
                     for c in manifest.classes)
    parts.append(f"<p class=legend>{legend}</p>")
    return PAGE.format(title=html.escape(f"fastseg set: {name}"), body="\n".join(parts))


def _header(shard_set: ShardSet, samples: int, name: str) -> str:
    manifest = shard_set.manifest
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{split.samples}</td><td>{len(split.shards)}</td>"
                   f"<td>{sum(s.bytes for s in split.shards) / 1e6:.1f} MB</td></tr>"
                   for name, split in manifest.splits.items())
    stored = ", ".join(f"{kind}s {how}" for kind, how in manifest.storage.items())
    found = f"found as {html.escape(manifest.layout)}; " if manifest.layout else ""
    return (f"<h1>{html.escape(name)}</h1><p>{found}{manifest.num_classes} classes; stored as {stored}; "
            f"format {manifest.format_version}; per-channel mean {manifest.mean}, std {manifest.std}.</p>"
            f"<table><tr><th>split</th><th>samples</th><th>shards</th><th>on disk</th></tr>{rows}</table>"
            f"<p class=note>Read for this page: the manifest, the shard indexes and {samples} random sample(s) per "
            "split, by offset; not the whole set.</p>")


def _samples(shard_set: ShardSet, split: str, count: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """(key, a JPEG of the image beside its class-coloured mask as base64, mask) of `count` random samples of the
    split, each read by offset through its shard's index."""
    manifest = shard_set.manifest
    stored = sample_members(manifest.storage)
    paths, indexes = check_shards(shard_set, split, checksums=False)  # the loaders' start-up check
    where = [(shard, key, members) for shard, index in zip(paths, indexes) for key, members in index_samples(index)]
    colors = [c.color for c in manifest.classes]
    read = fetching.SpanReader([shard for shard, _, _ in where])
    rows = []
    for shard, key, members in (where[n] for n in sorted(random.Random(seed).sample(range(len(where)),
                                                                                    min(count, len(where))))):
        size = read(shard, *members[stored.size]) if stored.size else None
        mask = member_pixels(read(shard, *members[stored.mask]), stored.raw_mask and size, 1)
        rows_cols = (THUMB_WIDTH * mask.shape[0] // mask.shape[1], THUMB_WIDTH)
        image = _thumbnail(read(shard, *members[stored.image_in(members)]), stored.raw_image and size,
                           rows_cols)
        small = np.asarray(Image.fromarray(mask).resize(rows_cols[::-1], Image.NEAREST))
        picture = Image.fromarray(np.concatenate([image, colorize(small, colors)], axis=1))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=85)
        rows.append((key, base64.b64encode(buffer.getvalue()).decode(), mask))
    return rows


def _thumbnail(data: bytes, size: bytes | None, rows_cols: tuple[int, int]) -> np.ndarray:
    """An image member at (rows, columns): a JPEG decoded at the reduced scale libjpeg offers (Pillow's draft)."""
    if size:
        picture = Image.fromarray(member_pixels(data, size, 3))
    else:
        picture = Image.open(io.BytesIO(data))
        picture.draft("RGB", rows_cols[::-1])
        picture = picture.convert("RGB")
    return np.asarray(picture.resize(rows_cols[::-1], Image.BILINEAR))



def _class_counts(manifest, drawn) -> tuple[dict, dict, str]:
    """Per split {class: pixels} and {class: images holding it} (and under "SPLIT#" the images counted), from the
    manifest's statistics, or for an older set from the drawn samples' masks."""
    statistics = manifest.statistics
    if "class_pixels" in statistics:
        images = dict(statistics["class_images"])
        images.update({f"{split}#": n for split, n in statistics["images"].items()})
        return statistics["class_pixels"], images, "Counted over every sample when the set was written."
    pixels, images = {}, {}
    for split, rows in drawn.items():
        counts = [np.bincount(mask.ravel(), minlength=256) for _, _, mask in rows]
        pixels[split] = {c.name: int(sum(h[c.id] for h in counts)) for c in manifest.classes}
        images[split] = {c.name: int(sum(h[c.id] > 0 for h in counts)) for c in manifest.classes}
        images[f"{split}#"] = len(rows)
    return pixels, images, ("This set was written before the statistics were kept: the shares below are of the "
                            "sampled masks only.")


def _bars(classes, pixels: dict, images: dict, count: int) -> str:
    labelled = sum(pixels.values()) or 1
    rows = []
    for c in classes:
        share, holding = pixels.get(c.name, 0) / labelled, images.get(c.name, 0) / max(count, 1)
        rows.append(f"<tr><td>{html.escape(c.name)}</td>"
                    f"<td class=bar><span style='width:{BAR_WIDTH * share:.1f}px;background:{_css(c.color)}'></span>"
                    f"{share:.2%}</td><td class=bar><span style='width:{BAR_WIDTH * holding:.1f}px;"
                    f"background:{_css(c.color)}'></span>{holding:.0%}</td></tr>")
    return ("<table class=classes><tr><th>class</th><th>share of the labelled pixels</th><th>share of the images "
            f"holding it</th></tr>{''.join(rows)}</table>")


def _sizes(manifest) -> str:
    rows = "".join(f"<tr><td>{html.escape(split)}</td><td>{', '.join(f'{w}×{h}' for w, h in sizes[:12])}"
                   f"{' …' if len(sizes) > 12 else ''} ({len(sizes)} size(s))</td></tr>"
                   for split, sizes in manifest.sizes.items())
    return f"<table><tr><th>split</th><th>width × height</th></tr>{rows}</table>"


def _css(color) -> str:
    red, green, blue = (int(v) for v in list(color)[:3])
    return f"rgb({red},{green},{blue})"


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px }}
table {{ border-collapse: collapse; margin: 0.5em 0 }}
td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left }}
td.bar {{ white-space: nowrap }}
td.bar span {{ display: inline-block; height: 0.9em; margin-right: 6px; vertical-align: middle;
               border: 1px solid #555; min-width: 1px }}
.warnings li {{ color: #8a4b00; margin: 0.3em 0 }}
.note {{ color: #666 }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px }}
figure {{ margin: 0 }} figcaption {{ font-size: 0.8em; color: #555 }}
.swatch {{ display: inline-block; width: 1em; height: 1em; border: 1px solid #555; margin: 0 4px 0 12px;
           vertical-align: middle }}
</style></head>
<body>
{body}
</body></html>
"""
