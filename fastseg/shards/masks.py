"""Masks → single-channel uint8 class indices (255 = ignore), decided once per dataset.

Four source kinds are understood:
- binary: grayscale {0,255} or {0,1}; any nonzero is foreground (class 1); with a threshold (lossy JPEG masks,
  anti-aliased edges, GIF or colour masks of two colours), brightness >= threshold is foreground;
- index: grayscale with a small set of values that already are class ids (CamVid);
- palette: 'P' PNGs whose palette indices are class ids (Pascal VOC);
- rgb: colour masks, mapped to ids through a class table (given, or discovered from the data).
A value table (`--map-values`, or a public dataset's own) maps index and palette values to class ids instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FastsegError
from ..format import IGNORE_INDEX, ClassInfo

MAX_CLASSES = 64  # more distinct values than this is not a label map (an anti-aliased or JPEG mask, say)
_UNKNOWN = -1
_PALETTE = [  # default colours for classes that come without one (Pascal VOC's first entries)
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128),
]


def default_color(class_id: int) -> list[int]:
    if class_id < len(_PALETTE):
        return list(_PALETTE[class_id])
    rng = np.random.default_rng(class_id)
    return [int(v) for v in rng.integers(0, 256, 3)]


@dataclass
class MaskSpec:
    """How every mask of one dataset becomes class indices; small and picklable for the shard workers."""

    kind: str  # binary | index | palette | rgb
    names: list[str] = field(default_factory=list)  # given or discovered class names, by id
    colors: list[list[int]] = field(default_factory=list)  # by id; for rgb the lookup key
    ignore_value: int | None = None  # a source value (index/palette) that means "ignore"
    fixed: bool = False  # class list given by the user: values outside it are errors
    table: list[int] | None = None  # source value → class id (256 entries; 255 = ignore, -1 = not allowed)
    table_source: str = "the value table"  # where the table came from, for the error on a value outside it
    threshold: int | None = None  # binary: brightness >= threshold is foreground, whatever the mask's mode

    def lut(self) -> np.ndarray:
        """Source value → class id, for grayscale and palette masks; _UNKNOWN where a value is not allowed."""
        if self.table is not None:
            return np.array(self.table, np.int16)
        table = np.full(256, _UNKNOWN, np.int16)
        if self.kind == "binary":  # 0/255 masks: 255 is the foreground, there is no ignore value
            table[0], table[255] = 0, 1
            return table
        count = len(self.names) if self.fixed else 255
        table[:count] = np.arange(count)
        table[IGNORE_INDEX] = IGNORE_INDEX
        if self.ignore_value is not None:
            table[self.ignore_value] = IGNORE_INDEX
        return table

    def convert(self, mask: Image.Image, where: str) -> tuple[np.ndarray, np.ndarray]:
        """The mask as uint8 class indices, and how many pixels each stored value (256 bins) has."""
        if self.threshold is not None:
            foreground = (np.asarray(mask.convert("L")) >= self.threshold).astype(np.uint8)
            return foreground, np.bincount(foreground.ravel(), minlength=256).astype(np.int64)
        if self.kind == "rgb":
            return self._convert_rgb(mask, where)
        values = _index_array(mask, where)
        # Pillow counts L and P pixels in C; either way far cheaper than np.unique's sort
        counts = (np.array(mask.histogram()[:256]) if mask.mode in ("L", "P")
                  else np.bincount(values.ravel(), minlength=256))
        distinct = np.nonzero(counts)[0]
        if self.kind == "binary" and not set(distinct.tolist()) <= {0, 255}:
            raise FastsegError(f"{where}: values {_short(distinct)} in a binary 0/255 mask dataset{_lossy_hint(counts)}")
        if len(distinct) > MAX_CLASSES and self.table is None:
            raise FastsegError(f"{where}: {len(distinct)} distinct values, not a class-index mask (is it anti-aliased "
                               f"or a JPEG?){_lossy_hint(counts)}")
        lut = self.lut()
        unknown = distinct[lut[distinct] == _UNKNOWN]
        if len(unknown) and self.table is not None:
            raise FastsegError(f"{where}: values {_short(unknown)} are not in {self.table_source}; map them too "
                               "(SRC:DST, DST 255 = ignore)")
        if len(unknown):
            raise FastsegError(
                f"{where}: values {_short(unknown)} are not among the {len(self.names)} classes of --classes; "
                "add them to the class file or fix the mask"
            )
        stored = np.bincount(lut[distinct], weights=counts[distinct], minlength=256).astype(np.int64)
        return np.take(lut.astype(np.uint8), values), stored

    def _convert_rgb(self, mask: Image.Image, where: str) -> tuple[np.ndarray, np.ndarray]:
        rgb = np.asarray(mask.convert("RGB"))
        codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        distinct, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        table = {_code(c): i for i, c in enumerate(self.colors)}
        ids = np.array([table.get(int(c), _UNKNOWN) for c in distinct], np.int16)
        if (ids == _UNKNOWN).any():
            bad = [_rgb(int(c)) for c in distinct[ids == _UNKNOWN]]
            raise FastsegError(f"{where}: colours {_short(bad)} are not in the class table; add them to --classes")
        stored = np.bincount(ids, weights=counts, minlength=256).astype(np.int64)
        return ids[inverse.reshape(codes.shape)].astype(np.uint8), stored

    def classes(self, present: np.ndarray) -> list[ClassInfo]:
        """The final class list; `present` is a 256-bin histogram of stored values over the whole dataset."""
        if self.fixed or self.kind in ("binary", "rgb"):
            count = len(self.names)
        else:
            ids = np.nonzero(present[:IGNORE_INDEX])[0]
            count = int(ids.max()) + 1 if len(ids) else 1
        names = self.names + [f"class_{i}" for i in range(len(self.names), count)]
        colors = self.colors + [default_color(i) for i in range(len(self.colors), count)]
        return [ClassInfo(i, names[i], [int(v) for v in colors[i]]) for i in range(count)]


def _lossy_hint(counts: np.ndarray) -> str:
    """The fix for binary masks saved lossy (JPEG) or anti-aliased: nearly every pixel near 0 or near 255."""
    near_ends = counts[:32].sum() + counts[224:256].sum()
    if counts.sum() and near_ends >= 0.9 * counts.sum():
        return "; its values cluster near 0 and 255, as a binary mask saved as JPEG does: pass --mask-threshold 128"
    return ""


def _index_array(mask: Image.Image, where: str) -> np.ndarray:
    if mask.mode == "1":
        return np.asarray(mask, np.uint8)
    if mask.mode in ("L", "P"):
        return np.asarray(mask)
    if mask.mode in ("I", "I;16", "I;16B", "F"):
        values = np.asarray(mask)
        if values.min() < 0 or values.max() > 255:
            raise FastsegError(f"{where}: {mask.mode} mask with values outside 0..255; not a class-index mask")
        return values.astype(np.uint8)
    if mask.mode == "LA":
        return np.asarray(mask.getchannel("L"))
    raise FastsegError(f"{where}: colour ({mask.mode}) mask in a dataset of single-channel masks")


def _code(color) -> int:
    r, g, b = (int(v) for v in color[:3])
    return (r << 16) | (g << 8) | b


def _rgb(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def _short(values, limit: int = 8) -> str:
    values = [v.tolist() if hasattr(v, "tolist") else v for v in values]
    more = f" … ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(str(tuple(v) if isinstance(v, list) else v) for v in values[:limit]) + more


def read_class_file(path: Path) -> list[dict]:
    """`--classes FILE`: a JSON list of {"name": …, "color": [r, g, b]}; list order gives the class ids."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FastsegError(f"{path}: cannot read the class file ({err})") from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise FastsegError(f'{path}: expected a JSON list like [{{"name": "road", "color": [128, 64, 128]}}, …]')
    return entries


def parse_value_map(text: str) -> dict[int, int]:
    """`--map-values 1:1,2:0,3:255`: source value → class id (255 = ignore), each source value once."""
    table = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        source, colon, target = item.partition(":")
        if not colon or not source.strip().isdigit() or not target.strip().isdigit():
            raise FastsegError(f"--map-values: {item!r} is not SRC:DST (e.g. 1:1,2:0,3:255)")
        source, target = int(source), int(target)
        if source > 255 or target > 255:
            raise FastsegError(f"--map-values: {item!r}: values and class ids are 0..255 (255 = ignore)")
        if source in table:
            raise FastsegError(f"--map-values: source value {source} is mapped twice")
        table[source] = target
    if not table:
        raise FastsegError("--map-values: no SRC:DST pairs given (e.g. 1:1,2:0,3:255)")
    return table


def binary_spec(threshold: int = 128) -> MaskSpec:
    """Background / foreground by brightness: any mask mode, any compression."""
    return MaskSpec("binary", ["background", "foreground"], [[0, 0, 0], [255, 255, 255]], fixed=True,
                    threshold=threshold)


def mapped_spec(table: dict[int, int], entries: list[dict], source: str, names: list[str] | None = None) -> MaskSpec:
    """Index masks through a value table; classes 0..max(DST), named by the class file (or `names`)."""
    ids = [v for v in table.values() if v != IGNORE_INDEX]
    count = max(ids) + 1 if ids else 1
    names = [e["name"] for e in entries] or list(names or (["background", "foreground"] if count == 2 else []))
    if len(names) > count:
        raise FastsegError(f"{len(names)} class names for {count} class ids from {source}")
    black_white = [[0, 0, 0], [255, 255, 255]] if count == 2 and not entries else []
    colors = [list(e["color"]) for e in entries if "color" in e] or black_white
    names += [f"class_{i}" for i in range(len(names), count)]
    colors += [default_color(i) for i in range(len(colors), count)]
    lut = [table.get(v, _UNKNOWN) for v in range(256)]
    return MaskSpec("index", names, colors, fixed=True, table=lut, table_source=source)


def detect_spec(samples: list[Path], class_file: Path | None = None, ignore_value: int | None = None, *,
                threshold: int | None = None, value_map: dict[int, int] | None = None) -> MaskSpec:
    """Decide the mask kind from a spread of sample masks; the class file, if any, fixes names and colours.
    A threshold makes every mask binary by brightness; a value map gives the source value → class id table."""
    entries = read_class_file(class_file) if class_file else []
    given = [flag for flag, value in (("--mask-threshold", threshold), ("--map-values", value_map),
                                      ("--ignore-value", ignore_value)) if value is not None]
    if len(given) > 1:
        raise FastsegError(f"{' and '.join(given)} both say how mask values become classes; give one of them")
    if threshold is not None:
        if not 1 <= threshold <= 255:
            raise FastsegError(f"--mask-threshold {threshold}: a brightness from 1 to 255 (128 for most masks)")
        return binary_spec(threshold)
    if value_map is not None:
        return mapped_spec(value_map, entries, "--map-values")
    modes, values, used = set(), set(), set()  # used: palette indices
    for path in samples:
        with Image.open(path) as mask:
            if mask.format == "JPEG":
                raise FastsegError(f"{path}: a mask saved as JPEG, which is lossy: its values are not exact class ids. "
                                   "For binary masks pass --mask-threshold 128; for others export them as PNG")
            modes.add(mask.mode)
            if mask.mode == "P":
                used |= set(np.nonzero(mask.histogram()[:256])[0].tolist())
            elif mask.mode not in ("RGB", "RGBA"):
                values |= set(np.unique(_index_array(mask, str(path))).tolist())
    names = [e["name"] for e in entries]
    colors = [list(e["color"]) for e in entries if "color" in e]
    if modes & {"RGB", "RGBA"}:
        if entries and len(colors) != len(entries):
            raise FastsegError(f"{class_file}: colour masks need a 'color' for every class")
        return MaskSpec("rgb", names, colors, fixed=bool(entries))
    if "P" in modes:
        with Image.open(samples[0]) as mask:
            palette = mask.getpalette() or []
        if len(used) == 2 and IGNORE_INDEX not in used and not entries and ignore_value is None:
            return _two_colour_spec(sorted(used), palette)
        if not colors:
            colors = [palette[i : i + 3] for i in range(0, min(len(palette), 3 * 255), 3)]
        return MaskSpec("palette", names, colors, ignore_value, fixed=bool(entries))
    if 255 in values and len(values & set(range(224, 255))) >= 2 and not entries and ignore_value is None:
        raise FastsegError(f"masks such as {samples[0]} hold values {_short(sorted(values))}: grey levels just under 255 "
                           "are the edges of anti-aliased binary masks; pass --mask-threshold 128 (or --classes FILE "
                           "if they are class ids)")
    if values <= {0, 1, 255} and ignore_value is None and len(entries) in (0, 2):
        names = names or ["background", "foreground"]
        colors = colors or [[0, 0, 0], [255, 255, 255]]
        # 0/255 masks are binary; 0/1 masks are already class ids, and then 255 can mean "ignore"
        return MaskSpec("index" if 1 in values else "binary", names, colors, fixed=True)
    return MaskSpec("index", names, colors, ignore_value, fixed=bool(entries))


def _two_colour_spec(indices: list[int], palette: list[int]) -> MaskSpec:
    """Palette masks of two colours (a GIF or palette PNG of a binary set, as Carvana ships them) are binary, like
    greyscale 0/255 masks: the darker colour is the background (class 0), the lighter one the foreground."""
    colour = {i: (palette[3 * i : 3 * i + 3] + [0, 0, 0])[:3] for i in indices}
    dark, light = sorted(indices, key=lambda i: (sum(colour[i]), i))
    return MaskSpec("index", ["background", "foreground"], [colour[dark], colour[light]], fixed=True,
                    table=[{dark: 0, light: 1}.get(v, _UNKNOWN) for v in range(256)],
                    table_source="the two palette colours of this binary mask set")


def discover_colors(masks) -> list[list[int]]:
    """All colours used by a set of colour masks (one 24-bit code per colour), sorted so black comes first."""
    codes = set()
    for found in masks:
        codes |= found
        if len(codes) > MAX_CLASSES:
            greys = sum(abs(r - g) <= 24 and abs(g - b) <= 24 for r, g, b in map(_rgb, codes))
            hint = (": they are nearly all greys, as a black-and-white mask saved as JPEG is: pass --mask-threshold "
                    "128" if greys >= 0.9 * len(codes) else "")
            raise FastsegError(
                f"colour masks use more than {MAX_CLASSES} colours: anti-aliased or JPEG masks? "
                f"Give the classes with --classes FILE{hint}"
            )
    return [list(_rgb(c)) for c in sorted(codes)]


def colors_in(path: Path) -> set[int]:
    with Image.open(path) as mask:
        rgb = np.asarray(mask.convert("RGB"))
    codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    return set(np.unique(codes).tolist())
