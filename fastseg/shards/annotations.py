"""Sets as annotation tools and the Hub ship them, recognised under SRC with no flags and turned into image/mask
pairs once, at shard time:

- **COCO** (`annotations/*.json` with `images`, `annotations`, `categories`; what CVAT, Label Studio, Roboflow and
  makesense export): each annotation rasterised by pycocotools, COCO's own API (`annToMask`'s rules: polygons,
  uncompressed and compressed RLE). Classes: `background` (or, with `--unannotated ignore`, nothing: unannotated
  pixels are ignored, as COCO-Stuff's "unlabeled" wants), then the categories by name in the order of their ids.
  Pixels that instances of different categories both cover, and `iscrowd` regions, are marked ignore (255), as
  torchvision's segmentation reference marks overlaps. Splits from the files' names (`instances_train*.json` →
  train, `*val*` → val, `*test*` → test), else carved as for folders.
- **labelme** (one JSON beside each image: `imagePath`, `shapes`): each shape rasterised as labelme's own
  `shape_to_mask` does (PIL, outline and fill; lines 10 px wide, points 5 px in radius), later shapes over earlier
  ones; `group_id` ignored. Classes: `_background_` and then the labels sorted (labelme's convention), or
  `--classes`.
- **Hugging Face parquet** (`data/SPLIT-*.parquet`: rows with the image and the mask as `{"bytes", "path"}`
  structs): read by row groups, the image and mask columns found by name (`image`/`pixel_values`/`img`,
  `annotation`/`label`/`mask`/`segmentation`/…); splits from the file names (`validation` → val). The bytes are
  kept as they are; the masks then go through the folder rules (binary, palette, values; `--classes`).

The masks (and a parquet set's images) are written to a staging folder for the shard writer, which reads pairs of
files; it is removed when fastseg-shard ends.
"""
from __future__ import annotations

import atexit
import glob
import importlib.util
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import FastsegError
from ..format import IGNORE_INDEX, make_key
from . import masks as maskmod
from .datasets import Recognised
from .options import ShardOptions
from .pairs import IMAGE_SUFFIXES, Pair

LAYOUTS = ("COCO (annotations/*.json)", "labelme (a .json beside each image)",
           "Hugging Face parquet (*.parquet) or arrow (save_to_disk's *.arrow)")
LINE_WIDTH, POINT_SIZE = 10, 5  # labelme's shape_to_mask defaults
IMAGE_COLUMNS = ("image", "pixel_values", "img", "images")
MASK_COLUMNS = ("annotation", "label", "mask", "segmentation", "semantic_map", "labels", "masks", "gt")
_staging: Path | None = None


def staging() -> Path:
    """This process's staging folder for rasterised masks (removed at exit)."""
    global _staging
    if _staging is None:
        _staging = Path(tempfile.mkdtemp(prefix="fastseg-annotations-"))
        atexit.register(shutil.rmtree, _staging, True)
    return _staging


def split_of(name: str) -> str:
    """train / val / test from a file's name (COCO's instances_val2017, the Hub's validation-00000-of-00001)."""
    lowered = name.lower()
    for split, words in (("train", ("train",)), ("val", ("validation", "valid", "val")), ("test", ("test",))):
        if any(word in lowered for word in words):
            return split
    return "all"


def recognise(src: Path, opts: ShardOptions) -> Recognised | None:
    """COCO, labelme or parquet under SRC, turned into pairs of files; or None."""
    if not src.is_dir():
        return None
    return _coco(src, opts) or _parquet(src, opts) or _labelme(src, opts)


def index_spec(names: list[str], source: str) -> maskmod.MaskSpec:
    """Masks written here: class ids 0..len(names)-1 as they are, 255 ignore."""
    table = {i: i for i in range(len(names))} | {IGNORE_INDEX: IGNORE_INDEX}
    return maskmod.mapped_spec(table, [{"name": name} for name in names], source)


def _save_mask(mask: np.ndarray, split: str, key: str) -> Path:
    path = staging() / split / f"{key}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path, compress_level=1)
    return path


# --- COCO ------------------------------------------------------------------------------------------------------
def _coco_files(src: Path, named: list[Path] | None) -> list[tuple[Path, dict]]:
    """The COCO files: those `named` (--coco), each of which must be one, or those in SRC/annotations/."""
    folder = src / "annotations"
    found = []
    for path in named or (sorted(folder.glob("*.json")) if folder.is_dir() else []):
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FastsegError(f"{path}: not readable JSON ({err}); export the annotations again") from None
        if isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data):
            found.append((Path(path), data))
        elif named:
            raise FastsegError(f"{path}: not a COCO file (it needs images, annotations and categories)")
    return found


def _coco(src: Path, opts: ShardOptions) -> Recognised | None:
    files = _coco_files(src, opts.coco)
    if not files:
        return None
    try:
        from pycocotools import mask as coco_mask
    except ImportError:  # pragma: no cover - a declared dependency
        raise FastsegError("COCO annotations need pycocotools: pip install pycocotools") from None
    categories = {}
    for path, data in files:
        for category in data["categories"]:
            if categories.setdefault(category["id"], category["name"]) != category["name"]:
                raise FastsegError(f"{path}: category {category['id']} is {category['name']!r} here and "
                                   f"{categories[category['id']]!r} in another file; the files must agree")
    ignore_rest = opts.unannotated == "ignore"
    names = ([] if ignore_rest else ["background"]) + [categories[i] for i in sorted(categories)]
    class_of = {cid: rank + (0 if ignore_rest else 1) for rank, cid in enumerate(sorted(categories))}
    on_disk = {}  # file name -> path, for images COCO names by a bare file name
    for path in src.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            on_disk.setdefault(path.name, path)
    splits: dict[str, list[Pair]] = {}
    empty = 0
    for path, data in files:
        split = split_of(path.stem)
        by_image = {}
        for annotation in data["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        known_images = {image["id"] for image in data["images"]}
        for image_id in by_image.keys() - known_images:
            raise FastsegError(f"{path}: annotation {by_image[image_id][0]['id']} points at image {image_id}, "
                               "which its images do not list; export the annotations again")
        for image in data["images"]:
            name = image["file_name"]
            beside = [src / name, src / "images" / name, path.parent.parent / "images" / name, path.parent / name]
            found = next((p for p in beside if p.is_file()), None) or on_disk.get(Path(name).name)
            if found is None:
                first = by_image.get(image["id"], [{}])[0].get("id", "none")
                raise FastsegError(f"{path}: image {image['id']} ({name}, first annotation {first}) is not under "
                                   f"{src}; put the images beside the annotations (SRC/images/ or SRC/)")
            anns = by_image.get(image["id"], [])
            empty += not anns
            mask = _coco_mask(coco_mask, path, image, anns, class_of, ignore_rest)
            key = make_key(Path(name).stem)
            splits.setdefault(split, []).append(Pair(key, found, _save_mask(mask, split, key)))
    if empty:
        print(f"{empty} image(s) without annotations: all {'ignore' if ignore_rest else 'background'}")
    source = ", ".join(p.name for p, _ in files)
    return Recognised(f"COCO annotations ({source}; rasterised by pycocotools)", splits,
                      index_spec(names, f"the COCO categories of {source}"))


def _coco_mask(coco_mask, path: Path, image: dict, anns: list[dict], class_of: dict[int, int],
               ignore_rest: bool) -> np.ndarray:
    """One image's class ids from its annotations, by COCO's own rules (annToRLE), overlaps and crowds ignored."""
    height, width = image["height"], image["width"]
    owner = np.zeros((height, width), np.int32)  # 0: nobody, else class id + 1
    clash = np.zeros((height, width), bool)
    crowd = np.zeros((height, width), bool)
    for ann in anns:
        where = f"{path}: annotation {ann.get('id')} (image {image['id']})"
        if ann.get("category_id") not in class_of:
            raise FastsegError(f"{where} names category {ann.get('category_id')}, which the categories do not list")
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            short = [len(polygon) for polygon in segmentation if len(polygon) < 6]
            if short or not segmentation:
                raise FastsegError(f"{where}: a polygon with fewer than three points; fix or remove it")
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and "counts" in segmentation:
            if list(segmentation.get("size", [])) != [height, width]:
                raise FastsegError(f"{where}: an RLE of size {segmentation.get('size')}, but the image is "
                                   f"{height}x{width} (height, width); export the annotations again")
            rle = coco_mask.frPyObjects(segmentation, height, width) if isinstance(segmentation["counts"], list) \
                else segmentation
        else:
            raise FastsegError(f"{where}: no segmentation (polygons or RLE); COCO masks need one")
        pixels = coco_mask.decode(rle).astype(bool)
        if ann.get("iscrowd"):
            crowd |= pixels
            continue
        value = class_of[ann["category_id"]] + 1
        clash |= pixels & (owner != 0) & (owner != value)
        owner[pixels & (owner == 0)] = value
    mask = np.where(owner > 0, owner - 1, IGNORE_INDEX if ignore_rest else 0).astype(np.uint8)
    mask[clash | crowd] = IGNORE_INDEX
    return mask


# --- labelme ---------------------------------------------------------------------------------------------------
def shape_to_mask(shape: tuple[int, int], points: list, shape_type: str | None, where: str) -> np.ndarray:
    """One labelme shape as a boolean mask, drawn as labelme's own shape_to_mask draws it."""
    mask = Image.fromarray(np.zeros(shape, np.uint8))
    draw = ImageDraw.Draw(mask)
    xy = [tuple(point) for point in points]
    kind = shape_type or "polygon"
    if kind == "circle" and len(xy) == 2:
        (cx, cy), (px, py) = xy
        radius = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=1, fill=1)
    elif kind == "rectangle" and len(xy) == 2:
        (x1, y1), (x2, y2) = xy
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=1, fill=1)
    elif kind in ("line", "linestrip") and len(xy) >= 2:
        draw.line(xy=xy, fill=1, width=LINE_WIDTH)
    elif kind == "point" and len(xy) == 1:
        cx, cy = xy[0]
        draw.ellipse([cx - POINT_SIZE, cy - POINT_SIZE, cx + POINT_SIZE, cy + POINT_SIZE], outline=1, fill=1)
    elif kind == "polygon" and len(xy) > 2:
        draw.polygon(xy=xy, outline=1, fill=1)
    else:
        raise FastsegError(f"{where}: a {kind!r} shape of {len(xy)} point(s), which fastseg cannot rasterise "
                           "(polygon, rectangle, circle, line, linestrip, point); fix or remove it")
    return np.array(mask, dtype=bool)


def _labelme(src: Path, opts: ShardOptions) -> Recognised | None:
    found = []
    for path in sorted(src.rglob("*.json")):
        beside = path.parent.glob(f"{glob.escape(path.stem)}.*")
        if not any(other.suffix.lower() in IMAGE_SUFFIXES for other in beside):
            continue  # labelme writes its JSON beside the image, by the image's name
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "shapes" in data and "imagePath" in data:
            found.append((path, data))
    if not found:
        return None
    if opts.classes:
        names = [entry["name"] for entry in maskmod.read_class_file(Path(opts.classes))]
    else:
        labels = {shape["label"] for _, data in found for shape in data["shapes"]}
        names = ["_background_"] + sorted(labels - {"_background_"})
    class_of = {name: i for i, name in enumerate(names)}
    pairs = []
    for path, data in found:
        image = (path.parent / data["imagePath"]).resolve()
        if not image.is_file():
            raise FastsegError(f"{path}: its imagePath {data['imagePath']!r} is not there ({image}); put the image "
                               "beside its JSON")
        with Image.open(image) as opened:
            width, height = opened.size
        mask = np.zeros((height, width), np.uint8)
        for number, shape in enumerate(data["shapes"]):
            where = f"{path}: shape {number} ({shape.get('label')!r})"
            if shape["label"] not in class_of:
                raise FastsegError(f"{where}: a label the --classes file does not list; add it there")
            mask[shape_to_mask((height, width), shape["points"], shape.get("shape_type"), where)] = \
                class_of[shape["label"]]
        key = make_key(path.stem)
        pairs.append(Pair(key, image, _save_mask(mask, "all", key)))
    return Recognised(f"labelme JSON ({len(found)} files; rasterised as labelme draws)", {"all": pairs},
                      index_spec(names, "the labelme labels" if not opts.classes else str(opts.classes)))


# --- Hugging Face parquet ----------------------------------------------------------------------------------------
def _column(schema, wanted: tuple[str, ...], path: Path, what: str, named: str | None) -> str:
    """The struct column {bytes, path} that holds the images or the masks: `named`, or found by name."""
    candidates = [field.name for field in schema if _is_file_struct(field.type)]
    if named:
        if named not in candidates:
            raise FastsegError(f"{path}: no {what} column {named!r} of {{bytes, path}} structs; those there: "
                               f"{', '.join(candidates) or 'none'}")
        return named
    for name in wanted:
        if name in candidates:
            return name
    raise FastsegError(f"{path}: no {what} column among {', '.join(candidates) or 'none'} (image columns are "
                       f"found by the names {', '.join(IMAGE_COLUMNS)}; mask columns by {', '.join(MASK_COLUMNS)}; "
                       "or name them: --image-column, --mask-column)")


def _is_file_struct(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(kind) and "bytes" in [kind.field(i).name for i in range(kind.num_fields)]


def _suffix(data: bytes, path: str | None) -> str:
    if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return Path(path).suffix.lower()
    return ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".img"


def _tables(src: Path) -> list[tuple[Path, str]]:
    """The Hub's table files under SRC with their split: parquet (`data/SPLIT-*.parquet`: the split from the name)
    or `datasets`' save_to_disk arrow files (`SPLIT/data-*.arrow`: from the folder; at SRC itself, one split)."""
    found = [(path, split_of(path.stem)) for path in sorted(src.rglob("*.parquet"))]
    return found or [(path, split_of(path.parent.name) if path.parent != src else "all")
                     for path in sorted(src.rglob("*.arrow"))]


def _batches(path: Path, columns: list[str]):
    """A table file's record batches, bounded in size (parquet's row groups read 64 rows at a time; an arrow
    stream's own batches), with only `columns`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=64, columns=columns)
        return
    with pa.memory_map(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            yield batch.select(columns)


def _schema(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.ParquetFile(path).schema_arrow
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).schema


# where a card's class_label names the masks' classes: the mask column itself, or a feature named for them (a
# class_label of another column, scene_parse_150's scene_category say, names something else)
CLASS_FEATURES = ("classes", "class_names", "label_names", "semantic_classes", "id2label")


def card_names(src: Path, mask_column: str) -> list[str] | None:
    """The masks' class names the Hub's set lists, by id: its id2label.json (the Hub's segmentation sets ship one),
    else the names of a class_label feature for the masks (the mask column, or one of CLASS_FEATURES) in its card
    (README.md's `dataset_info`) or in save_to_disk's dataset_info.json; None where none does. Ids missing from the
    table are named class_ID."""
    table = _card_file(src / "id2label.json", json.loads) if (src / "id2label.json").is_file() else None
    infos = []
    card = src / "README.md"
    if table is None and card.is_file():
        info = (_card_file(card, _front_matter) or {}).get("dataset_info") or []
        infos += info if isinstance(info, list) else [info]
    if table is None:
        infos += [_card_file(path, json.loads) for path in sorted(src.rglob("dataset_info.json"))]
    for info in infos:
        if not isinstance(info, dict):
            continue
        features = info.get("features") or []
        named = features.items() if isinstance(features, dict) else ((f.get("name"), f) for f in features)
        for name, feature in named:
            labels = (feature.get("dtype") or {}).get("class_label") if isinstance(feature.get("dtype"), dict) \
                else feature if feature.get("_type") == "ClassLabel" else None
            if labels and labels.get("names") and name in (mask_column, *CLASS_FEATURES):
                names = labels["names"]
                table = names if isinstance(names, dict) else dict(enumerate(names))
                break
        if table is not None:
            break
    if not table:
        return None
    try:
        ids = {int(k): str(v) for k, v in table.items()}
    except (AttributeError, TypeError, ValueError):
        raise FastsegError(f"{src}: its class table maps {type(table).__name__} {str(table)[:60]!r}, not ids to "
                           "names; write id2label.json as {\"0\": \"name\", ...} or pass --classes") from None
    return [ids.get(i, f"class_{i}") for i in range(max(ids) + 1)]


def _front_matter(text: str):
    """The YAML between a card's opening `---` lines; None where the card has none."""
    import yaml

    return yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None


def _card_file(path: Path, parse):
    """`path` parsed, or one line naming it where it does not parse."""
    try:
        return parse(path.read_text(errors="replace"))
    except Exception as err:  # json's and yaml's errors share no base class
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FastsegError(f"{path}: not readable ({first}); fix it, or pass --classes to name the classes") from None


def _parquet(src: Path, opts: ShardOptions) -> Recognised | None:
    tables = _tables(src)
    if not tables:
        return None
    if importlib.util.find_spec("pyarrow") is None:  # pragma: no cover - a declared dependency
        raise FastsegError("Hub sets need pyarrow: pip install pyarrow")
    splits: dict[str, list[Pair]] = {}
    seen: set[tuple[str, str]] = set()
    for path, split in tables:
        schema = _schema(path)
        image_column = _column(schema, IMAGE_COLUMNS, path, "image", opts.image_column)
        mask_column = _column(schema, MASK_COLUMNS, path, "mask", opts.mask_column)
        row = 0
        for batch in _batches(path, [image_column, mask_column]):  # bounded memory
            for image, mask in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                where = f"{path}: row {row}"
                row += 1
                if not image or not image.get("bytes") or not mask or not mask.get("bytes"):
                    raise FastsegError(f"{where} has no image or no mask bytes; every row needs both")
                stem = Path(image["path"]).stem if image.get("path") else ""
                key = make_key(stem) if stem and (split, make_key(stem)) not in seen else \
                    make_key(f"{path.stem}-{row - 1:06d}")
                seen.add((split, key))
                folder = staging() / "tables" / split
                files_of = []
                for kind, item in (("images", image), ("masks", mask)):
                    target = folder / kind / f"{key}{_suffix(item['bytes'], item.get('path'))}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(item["bytes"])
                    files_of.append(target)
                splits.setdefault(split, []).append(Pair(key, *files_of))
    classes, named = opts.classes, ""
    if classes is None and (names := card_names(src, mask_column)):
        classes = staging() / "card-classes.json"
        classes.write_text(json.dumps([{"name": name} for name in names]))
        named = f"; {len(names)} class names from the card"
    everything = [p for pairs in splits.values() for p in pairs]
    spread = [p.mask for p in everything[:: max(1, len(everything) // 32)]]
    spec = maskmod.detect_spec(spread, classes, opts.ignore_value, threshold=opts.mask_threshold,
                               value_map=opts.map_values)
    files = [path for path, _ in tables]
    where = ", ".join(str(p.relative_to(src)) for p in files[:3]) + (" …" if len(files) > 3 else "")
    kind = "parquet" if files[0].suffix == ".parquet" else "arrow (save_to_disk)"
    return Recognised(f"Hugging Face {kind} ({where}: columns {image_column}, {mask_column}{named})", splits, spec)


__all__ = ["recognise", "shape_to_mask", "split_of"]
