"""Sets as annotation tools and the Hub ship them (shards/annotations.py), made here from the same photos: a COCO
export (train as polygons from OpenCV contours, val as uncompressed RLE), a labelme folder and a parquet set, each
sharded with no flags, and each bad input named with its file and annotation."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.sets import load_manifest

from .conftest import make_dataset, save, textured

SIZE = (256, 192)  # width, height


def shard(src: Path, out: Path, capsys, *extra) -> tuple[int, str]:
    code = run_cli("fastseg-shard", shard_main, [str(src), str(out), "--workers", "1", *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def stored_masks(shards: Path) -> dict[str, np.ndarray]:
    """key -> the mask each shard holds (decoded from its PNG member)."""
    found = {}
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mask.png"):
                    data = tar.extractfile(member).read()
                    found[member.name.partition(".")[0]] = np.array(Image.open(io.BytesIO(data)))
    return found


def stored_images(shards: Path) -> dict[str, bytes]:
    found = {}
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if ".image." in member.name:
                    found[member.name.partition(".")[0]] = tar.extractfile(member).read()
    return found


def class_masks(count: int) -> list[np.ndarray]:
    """Class ids 0 (background), 1 (a disk) and 2 (a block), apart, as large as an annotator's regions are."""
    found = []
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    for i in range(count):
        mask = np.zeros(SIZE[::-1], np.uint8)
        mask[(x - 86 - i) ** 2 + (y - 96) ** 2 < 80 ** 2] = 1
        mask[10 + i:184, 172:254 - i] = 2
        found.append(mask)
    return found


def polygons(region: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """SRC/images/*.jpg and SRC/annotations/instances_{train,val}.json: categories 3 (cat) and 7 (dog)."""
    from pycocotools import mask as coco_mask

    root = tmp_path_factory.mktemp("coco")
    masks = class_masks(6)
    files = {}
    for split, numbers in (("train", range(4)), ("val", range(4, 6))):
        images, annotations = [], []
        for n in numbers:
            save(textured(*SIZE, n), root / "images" / f"p{n:03d}.jpg", quality=95)
            images.append({"id": n, "file_name": f"p{n:03d}.jpg", "width": SIZE[0], "height": SIZE[1]})
            for value, category in ((1, 3), (2, 7)):
                region = masks[n] == value
                if split == "train":
                    segmentation = polygons(region)
                else:  # uncompressed RLE: counts as a list, column-major, as COCO writes it
                    rle = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
                    runs, flat, value_now, count = [], region.T.reshape(-1), False, 0
                    for pixel in flat:
                        if pixel != value_now:
                            runs.append(count)
                            value_now, count = pixel, 0
                        count += 1
                    runs.append(count)
                    segmentation = {"size": list(rle["size"]), "counts": [int(r) for r in runs]}
                annotations.append({"id": len(annotations) + 100 * n, "image_id": n, "category_id": category,
                                    "segmentation": segmentation, "iscrowd": 0})
        data = {"images": images, "annotations": annotations,
                "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]}
        files[split] = root / "annotations" / f"instances_{split}.json"
        files[split].parent.mkdir(exist_ok=True)
        files[split].write_text(json.dumps(data))
    return root, masks, files


def test_a_coco_export_shards_with_no_flags_as_pycocotools_rasterises_it(coco, tmp_path, capsys):
    from pycocotools.coco import COCO

    root, masks, files = coco
    code, out = shard(root, tmp_path / "shards", capsys)
    assert code == 0, out
    assert "recognised COCO annotations" in out
    manifest = load_manifest(tmp_path / "shards")
    assert [c.name for c in manifest.classes] == ["background", "cat", "dog"]  # category ids 3, 7 in order
    assert manifest.splits["train"].samples == 4 and manifest.splits["val"].samples == 2  # from the file names
    stored = stored_masks(tmp_path / "shards")
    api = COCO(str(files["train"]))
    for image_id in range(4):  # polygons: exactly pycocotools' pixels, and the drawn regions at IoU >= 0.98
        expected = np.zeros(SIZE[::-1], np.uint8)
        for ann in api.loadAnns(api.getAnnIds(imgIds=[image_id])):
            expected[api.annToMask(ann).astype(bool)] = {3: 1, 7: 2}[ann["category_id"]]
        assert np.array_equal(stored[f"p{image_id:03d}"], expected)
        for value in (1, 2):
            a, b = stored[f"p{image_id:03d}"] == value, masks[image_id] == value
            assert (a & b).sum() / (a | b).sum() >= 0.98
    for image_id in (4, 5):  # uncompressed RLE: exact
        assert np.array_equal(stored[f"p{image_id:03d}"], masks[image_id])


def test_coco_overlaps_and_crowds_are_ignored_and_unannotated_pixels_can_be(tmp_path, capsys):
    root = tmp_path / "src"
    save(textured(*SIZE, 1), root / "p.jpg")
    box = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "p.jpg", "width": SIZE[0], "height": SIZE[1]}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": box(10, 10, 40, 40), "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": box(30, 30, 60, 60), "iscrowd": 0},
                        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": box(70, 5, 90, 20),
                         "iscrowd": 1}]}))
    for rest, background in (("background", 0), ("ignore", 255)):
        out = tmp_path / rest
        code, text = shard(root, out, capsys, "--unannotated", rest, "--val-fraction", "0")
        assert code == 0, text
        mask = stored_masks(out)["p"]
        offset = 0 if rest == "ignore" else 1  # without a background class, "a" is class 0
        assert mask[20, 20] == 1 - 1 + offset and mask[50, 50] == 2 - 1 + offset  # each category alone
        assert mask[35, 35] == 255 and mask[10, 80] == 255  # both categories: ignored; a crowd: ignored
        assert mask[70, 5] == background


@pytest.mark.parametrize("broken, message", [
    (lambda d: d["images"][0].update(file_name="gone.jpg"), r"image 0 \(gone.jpg, first annotation 0\) is not under"),
    (lambda d: d["annotations"][0].update(category_id=99), r"annotation 0 \(image 0\) names category 99"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]), r"annotation 0 .*fewer than three points"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 10], "counts": [100]}),
     r"annotation 0 \(image 0\): an RLE of size \[10, 10\], but the image is 192x256"),
])
def test_a_bad_coco_annotation_is_named_with_its_file_and_id_and_nothing_is_written(coco, tmp_path, capsys, broken,
                                                                                    message):
    root, _, files = coco
    src = tmp_path / "src"
    (src / "annotations").mkdir(parents=True)
    (src / "images").symlink_to(root / "images")
    data = json.loads(files["train"].read_text())
    broken(data)
    (src / "annotations" / "instances_train.json").write_text(json.dumps(data))
    code, text = shard(src, tmp_path / "out", capsys)
    assert code == 1 and "instances_train.json" in text
    assert __import__("re").search(message, text), text
    assert not (tmp_path / "out").exists()


def labelme_folder(root: Path, shapes_of) -> Path:
    for n in range(3):
        save(textured(*SIZE, n), root / f"photo{n}.jpg")
        (root / f"photo{n}.json").write_text(json.dumps({"imagePath": f"photo{n}.jpg", "imageData": None,
                                                         "imageHeight": SIZE[1], "imageWidth": SIZE[0],
                                                         "shapes": shapes_of(n)}))
    return root


def test_a_labelme_folder_shards_with_no_flags_as_labelme_draws_it(tmp_path, capsys):
    def shapes(n):
        return [{"label": "road", "shape_type": "rectangle", "points": [[10, 5], [50, 30]], "group_id": None},
                {"label": "car", "shape_type": "polygon", "points": [[20, 10], [40, 10], [40, 20], [20, 20]]},
                {"label": "sign", "shape_type": "circle", "points": [[70, 50], [70 + 5 + n, 50]]}]

    src = labelme_folder(tmp_path / "src", shapes)
    code, text = shard(src, tmp_path / "shards", capsys, "--val-fraction", "0")
    assert code == 0 and "recognised labelme" in text, text
    assert [c.name for c in load_manifest(tmp_path / "shards").classes] == ["_background_", "car", "road", "sign"]
    for n, mask in sorted(stored_masks(tmp_path / "shards").items()):
        number = int(n[-1])
        assert (mask[5:31, 10:51] != 0).all() and (mask[:5] == 0).all()  # PIL's rectangle: both corners included
        assert (mask[10:21, 20:41] == 1).all()  # the later polygon over the rectangle, outline and fill
        assert (mask[5:31, 10:51][mask[5:31, 10:51] != 1] == 2).all()
        radius = 5 + number
        assert abs((mask == 3).sum() - np.pi * radius ** 2) < 2 * np.pi * radius + 4  # the circle, PIL's ellipse


def test_a_labelme_shape_it_cannot_draw_is_named_with_its_file(tmp_path, capsys):
    src = labelme_folder(tmp_path / "src", lambda n: [{"label": "x", "shape_type": "mask", "points": [[1, 1]]}])
    code, text = shard(src, tmp_path / "shards", capsys)
    assert code == 1 and "photo0.json: shape 0 ('x'): a 'mask' shape" in text and "cannot rasterise" in text
    assert not (tmp_path / "shards").exists()


def test_a_parquet_set_holds_the_folder_sets_image_bytes_and_mask_pixels(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folders = make_dataset(tmp_path / "folders", count=8, size=SIZE, mask="palette", classes=3)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [({"bytes": image.read_bytes(), "path": image.name},
             {"bytes": (folders / "masks" / f"{image.stem}.png").read_bytes(), "path": f"{image.stem}.png"})
            for image in sorted((folders / "images").iterdir())]
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    for split, part in (("train", rows[:6]), ("validation", rows[6:])):
        table = pa.table({"image": pa.array([r[0] for r in part], struct),
                          "annotation": pa.array([r[1] for r in part], struct)})
        pq.write_table(table, hub / f"{split}-00000-of-00001.parquet", row_group_size=4)
    code, text = shard(tmp_path / "hub", tmp_path / "from_parquet", capsys)
    assert code == 0 and "recognised Hugging Face parquet" in text, text
    manifest = load_manifest(tmp_path / "from_parquet")
    assert manifest.splits["train"].samples == 6 and manifest.splits["val"].samples == 2
    code, text = shard(folders, tmp_path / "from_folders", capsys, "--val-fraction", "0")
    assert code == 0, text
    assert stored_images(tmp_path / "from_parquet") == stored_images(tmp_path / "from_folders")
    parquet_masks, folder_masks = stored_masks(tmp_path / "from_parquet"), stored_masks(tmp_path / "from_folders")
    assert sorted(parquet_masks) == sorted(folder_masks) and len(folder_masks) == 8
    assert all(np.array_equal(parquet_masks[k], folder_masks[k]) for k in folder_masks)


def test_coco_files_can_be_named_and_parquet_columns_too(coco, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, _, files = coco
    src = tmp_path / "exported"
    (src / "images").mkdir(parents=True)
    for image in (root / "images").iterdir():
        (src / "images" / image.name).write_bytes(image.read_bytes())
    code, text = shard(src, tmp_path / "named", capsys, "--coco", files["val"])  # a file outside SRC/annotations
    assert code == 0 and "instances_val.json" in text, text
    assert load_manifest(tmp_path / "named").splits["val"].samples == 2

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    image = (root / "images" / "p000.jpg").read_bytes()
    mask = io.BytesIO()
    Image.fromarray(np.zeros(SIZE[::-1], np.uint8)).save(mask, format="PNG")
    hub = tmp_path / "hub"
    hub.mkdir()
    pq.write_table(pa.table({"photo": pa.array([{"bytes": image, "path": "a.jpg"}] * 2, struct),
                             "target": pa.array([{"bytes": mask.getvalue(), "path": "a.png"}] * 2, struct)}),
                   hub / "train.parquet")
    code, text = shard(hub, tmp_path / "unnamed", capsys)
    assert code == 1 and "train.parquet: no image column among photo, target" in text and "--image-column" in text
    code, text = shard(hub, tmp_path / "columns", capsys, "--image-column", "photo", "--mask-column", "target",
                       "--val-fraction", "0")
    assert code == 0 and load_manifest(tmp_path / "columns").splits["train"].samples == 2, text


def test_a_save_to_disk_set_shards_with_the_class_names_its_card_lists_and_the_layout_is_recorded(tmp_path, capsys):
    """`datasets`' save_to_disk folders (SPLIT/data-*.arrow, arrow streams read batch by batch) shard with no
    flags, the same samples as the folder set; the class names come from the set's card (README.md's dataset_info:
    a class_label feature for the masks), and a class_label of another column (scene_parse_150's scene_category)
    is not taken for them; the layout found is printed and named in the manifest and the report."""
    import pyarrow as pa

    folders = make_dataset(tmp_path / "folders", count=6, size=SIZE, mask="index", classes=3)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [({"bytes": image.read_bytes(), "path": image.name},
             {"bytes": (folders / "masks" / f"{image.stem}.png").read_bytes(), "path": f"{image.stem}.png"})
            for image in sorted((folders / "images").iterdir())]
    disk = tmp_path / "saved"
    for split, part in (("train", rows[:4]), ("validation", rows[4:])):
        (disk / split).mkdir(parents=True)
        table = pa.table({"image": pa.array([r[0] for r in part], struct),
                          "annotation": pa.array([r[1] for r in part], struct),
                          "scene_category": pa.array([0] * len(part), pa.int64())})
        with pa.OSFile(str(disk / split / "data-00000-of-00001.arrow"), "wb") as sink, \
                pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)  # batches of 2 rows
    features = {"features": [{"name": "image", "dtype": "image"}, {"name": "annotation", "dtype": "image"},
                             {"name": "scene_category", "dtype": {"class_label": {"names": {"0": "kitchen"}}}},
                             {"name": "classes", "dtype": {"class_label": {"names": {"0": "sky", "1": "disk",
                                                                                     "2": "stripe"}}}}]}
    import yaml

    (disk / "README.md").write_text("---\n" + yaml.safe_dump({"dataset_info": features}) + "---\n# a card\n")
    code, text = shard(disk, tmp_path / "out", capsys)
    assert code == 0 and "recognised Hugging Face arrow (save_to_disk)" in text and "3 class names from the card" \
        in text, text
    manifest = load_manifest(tmp_path / "out")
    assert [c.name for c in manifest.classes] == ["sky", "disk", "stripe"]
    assert manifest.splits["train"].samples == 4 and manifest.splits["val"].samples == 2
    assert manifest.layout.startswith("Hugging Face arrow (save_to_disk)")
    assert "found as Hugging Face arrow" in (tmp_path / "out" / "report.html").read_text()
    code, text = shard(folders, tmp_path / "from_folders", capsys, "--val-fraction", "0")
    assert code == 0 and "found SRC/images + SRC/masks: train 6" in text, text
    assert load_manifest(tmp_path / "from_folders").layout == "SRC/images + SRC/masks"
    assert stored_images(tmp_path / "out") == stored_images(tmp_path / "from_folders")
    ours, theirs = stored_masks(tmp_path / "out"), stored_masks(tmp_path / "from_folders")
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in theirs)
    (disk / "README.md").write_text("---\n" + yaml.safe_dump({"dataset_info": {"features": features["features"][:3]}})
                                    + "---\n")
    code, text = shard(disk, tmp_path / "unnamed", capsys)
    assert code == 0 and "from the card" not in text, text  # scene_category names scenes, not mask classes
    assert [c.name for c in load_manifest(tmp_path / "unnamed").classes] == ["class_0", "class_1", "class_2"]
    for name, text in (("README.md", "---\ndataset_info: [unclosed\n---\n"), ("id2label.json", '{"0": "sky",')):
        (disk / name).write_text(text)  # a card or table that does not parse: one line naming it, nothing written
        code, said = shard(disk, tmp_path / f"bad_{name}", capsys)
        assert code != 0 and f"{disk / name}: not readable" in said and "--classes" in said, said
        assert "Traceback" not in said and not (tmp_path / f"bad_{name}" / "manifest.json").exists()
