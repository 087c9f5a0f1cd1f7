"""Exports never write outside --out, never give two images one label file, and line up with the
clients' own loaders (Ultralytics' ``YOLODataset``, torchvision's ``CocoDetection``, PyYAML), on
hand-made COCO files of real photos through ``python -m gem_sam.export``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from gem_sam.cli.export import main
from gem_sam.export.layout import split_names, unsafe_file_name
from gem_sam.export.yolo import label_path, yaml_quoted
from gem_sam.mask_ops import encode_rle
from gem_sam.paths import distinct_names

from ..conftest import small_photo

EXIF_ORIENTATION = 0x0112


def export(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def box_mask(size_hw: tuple[int, int], top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros(size_hw, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def write_coco(
    path: Path,
    images_dir: Path,
    images: list[tuple[str, tuple[int, int], list[tuple[int, np.ndarray]]]],
    names: list[str],
) -> Path:
    """A COCO file as gem_sam.label writes it: (file name, (height, width), [(category id, mask)])."""
    coco_images, annotations = [], []
    for image_id, (file_name, (height, width), masks) in enumerate(images, start=1):
        coco_images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for category, mask in masks:
            rle = encode_rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle,
                    "area": int(mask.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})],
                    "iscrowd": 0,
                    "score": round(0.9 - 0.05 * len(annotations), 3),
                    "similarity": 0.3,
                    "predicted_iou": 0.9,
                    "stability_score": 0.95,
                }
            )
    data = {
        "info": {"description": "gem_sam", "images_dir": str(images_dir.resolve()), "settings": {}},
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(names, start=1)],
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def folder_state(folder: Path) -> dict[str, tuple[bool, bytes]]:
    """Every path below ``folder`` -> (is a link, content), to check that nothing changed."""
    return {
        str(path.relative_to(folder)): (path.is_symlink(), path.read_bytes() if path.is_file() else b"")
        for path in sorted(folder.rglob("*"))
    }


# Ultralytics patches PIL's Image.open and sets torch's thread count when imported, so it runs in a
# process of its own.
ULTRALYTICS_READER = """
import json, sys
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset

data = check_det_dataset(sys.argv[1])
out = {"names": {str(k): v for k, v in data["names"].items()}, "splits": {}}
for split in ("train", "val"):
    dataset = YOLODataset(img_path=data[split], data=data, task="segment", augment=False, imgsz=64)
    out["splits"][split] = [
        {"im_file": label["im_file"], "shape": list(label["shape"]), "cls": label["cls"][:, 0].tolist(),
         "segments": [segment.tolist() for segment in label["segments"]]}
        for label in dataset.labels
    ]
print(json.dumps(out))
"""


def read_with_ultralytics(data_yaml: Path, tmp_path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", ULTRALYTICS_READER, str(data_yaml)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics_config")},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def ultralytics_masks(label: dict) -> list[tuple[int, np.ndarray]]:
    """(class index, filled polygon) of each instance of a ``YOLODataset`` label, as Ultralytics fills it."""
    import cv2

    height, width = label["shape"]
    out = []
    for category, segment in zip(label["cls"], label["segments"], strict=True):
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(canvas, [np.floor(np.array(segment) * [width, height]).astype(np.int32)], 1)
        out.append((int(category), canvas.astype(bool)))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# --- file names that leave the folder -------------------------------------------------------------


@pytest.mark.parametrize(
    "name,why",
    [
        ("a.jpg", None),
        ("nested/deeper/a b.png", None),
        ("/home/me/notes.jpg", "absolute"),
        ("../x.jpg", "climbs out"),
        ("a/../../x.jpg", "climbs out"),
        ("C:/photos/x.jpg", "drive"),
        ("dir\\x.jpg", "backslash"),
        ("", "empty"),
        ("folder/", "extension"),
    ],
)
def test_unsafe_file_names(name: str, why: str | None) -> None:
    reason = unsafe_file_name(name)
    assert reason is None if why is None else why in reason


@pytest.mark.parametrize("fmt", ["yolo-seg", "coco-polygons", "semantic"])
@pytest.mark.parametrize("kind", ["absolute", "climbing"])
def test_export_refuses_file_names_outside_the_folder(tmp_path: Path, fmt: str, kind: str) -> None:
    """An absolute or climbing file_name is refused before anything is written: the file it names is
    untouched (it used to be unlinked and replaced by a link to itself)."""
    home = tmp_path / "home"
    home.mkdir()
    notes = home / "notes.jpg"
    small_photo("coffee.png", long_side=40).convert("RGB").save(notes)
    images = tmp_path / "images"
    images.mkdir()
    small_photo("astronaut.png", long_side=40).save(images / "ok.png")
    name = str(notes.resolve()) if kind == "absolute" else "../home/notes.jpg"
    size_hw = np.asarray(Image.open(notes)).shape[:2]
    coco = write_coco(
        tmp_path / "a.json",
        images,
        [("ok.png", (40, 40), []), (name, size_hw, [(1, box_mask(size_hw, 1, 1, 9, 9))])],
        ["x"],
    )
    before = folder_state(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = export(str(coco), "--to", fmt, "--out", str(out))
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and name in err and "only write inside --out" in err
    assert folder_state(tmp_path) == before and not out.exists()


# --- one label file per image ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "names,expected",
    [
        (["a.jpg", "b.jpg"], ["a.jpg", "b.jpg"]),
        (["a.jpg", "a.png"], ["a.jpg", "a_png.png"]),
        (["a.jpg", "a.png", "a_png.png"], ["a.jpg", "a_png_2.png", "a_png.png"]),
        (["A.jpg", "a.png"], ["A.jpg", "a_png.png"]),  # case-insensitive file systems merge A.txt and a.txt
        (["x/a.jpg", "y/a.png"], ["x/a.jpg", "y/a.png"]),
        (["x/a.jpg", "x/a.tif", "x/a.png"], ["x/a.jpg", "x/a_tif.tif", "x/a_png.png"]),
    ],
)
def test_distinct_names(names: list[str], expected: list[str]) -> None:
    renamed = distinct_names(names)
    assert [renamed[name] for name in names] == expected


@pytest.mark.parametrize(
    "image,label",
    [
        ("images/a.jpg", "labels/a.txt"),
        ("images/train/x/a.b.png", "labels/train/x/a.b.txt"),
        ("images/data/images/train/x.jpg", "images/data/labels/train/x.txt"),  # the last /images/ counts
        ("images/labels/x.jpg", "labels/labels/x.txt"),
    ],
)
def test_label_path_is_ultralytics_rule(image: str, label: str) -> None:
    assert label_path(image) == label
    # Ultralytics' own rule, in a process of its own (importing it changes PIL and torch settings)
    rule = "import sys; from ultralytics.data.utils import img2label_paths; print(img2label_paths([sys.argv[1]])[0])"
    result = subprocess.run([sys.executable, "-c", rule, f"/root/{image}"], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == f"/root/{label}"


def test_same_stem_images_keep_their_own_labels(tmp_path: Path) -> None:
    """a.jpg and a.png: one box each, of different classes; each keeps its own labels in Ultralytics'
    loader and in the semantic export."""
    images = tmp_path / "images"
    images.mkdir()
    small_photo("astronaut.png", long_side=64).convert("RGB").save(images / "a.jpg")
    small_photo("coffee.png", long_side=64).convert("RGB").save(images / "a.png")
    size_a = np.asarray(Image.open(images / "a.jpg")).shape[:2]
    size_b = np.asarray(Image.open(images / "a.png")).shape[:2]
    mask_a, mask_b = box_mask(size_a, 4, 4, 30, 30), box_mask(size_b, 10, 20, 40, 50)
    coco = write_coco(
        tmp_path / "a.json", images, [("a.jpg", size_a, [(1, mask_a)]),
         ("a.png", size_b, [(2, mask_b), (2, box_mask(size_b, 0, 0, 8, 8))])],
        ["person", "cup"],
    )  # fmt: skip

    code, stdout, _ = export(str(coco), "--to", "yolo-seg", "--out", str(tmp_path / "yolo"))
    assert (
        code == 0 and "renamed so that each image keeps its own labels: 1" in stdout and "a.png -> a_png.png" in stdout
    )
    read = read_with_ultralytics(tmp_path / "yolo" / "data.yaml", tmp_path)
    by_file = {Path(label["im_file"]).name: label for label in read["splits"]["train"]}
    assert sorted(by_file) == ["a.jpg", "a_png.png"]
    assert [c for c, _ in ultralytics_masks(by_file["a.jpg"])] == [0]
    assert [c for c, _ in ultralytics_masks(by_file["a_png.png"])] == [1, 1]
    assert iou(ultralytics_masks(by_file["a.jpg"])[0][1], mask_a) == 1.0
    assert iou(ultralytics_masks(by_file["a_png.png"])[0][1], mask_b) == 1.0

    code, stdout, _ = export(str(coco), "--to", "semantic", "--out", str(tmp_path / "sem"))
    assert code == 0 and "a.png -> a_png.png" in stdout
    map_a = np.asarray(Image.open(tmp_path / "sem" / "labels" / "a.png"))
    map_b = np.asarray(Image.open(tmp_path / "sem" / "labels" / "a_png.png"))
    np.testing.assert_array_equal(map_a, mask_a.astype(np.uint8))
    assert set(np.unique(map_b)) == {0, 2} and (map_b[mask_b] == 2).all()
    assert (tmp_path / "sem" / "images" / "a_png.png").resolve() == (images / "a.png").resolve()


def test_nested_images_folders_are_found_by_ultralytics(tmp_path: Path) -> None:
    """Photos labelled as data/ from data/images/train/x.jpg: Ultralytics finds every label."""
    data = tmp_path / "data"
    (data / "images" / "train").mkdir(parents=True)
    (data / "images" / "val").mkdir(parents=True)
    entries = []
    for index, (name, photo) in enumerate(
        [("images/train/x.jpg", "astronaut.png"), ("images/val/y.jpg", "coffee.png"), ("z.jpg", "chelsea.png")]
    ):
        small_photo(photo, long_side=64).convert("RGB").save(data / name)
        size_hw = np.asarray(Image.open(data / name)).shape[:2]
        entries.append((name, size_hw, [(1 + index % 2, box_mask(size_hw, 2, 2 + index, 20, 30))]))
    coco = write_coco(tmp_path / "a.json", data, entries, ["person", "cup"])
    assert export(str(coco), "--to", "yolo-seg", "--out", str(tmp_path / "yolo"))[0] == 0
    read = read_with_ultralytics(tmp_path / "yolo" / "data.yaml", tmp_path)
    labels = {Path(label["im_file"]).name: label for label in read["splits"]["train"]}
    assert sorted(labels) == ["x.jpg", "y.jpg", "z.jpg"]
    for name, _, masks in entries:
        found = ultralytics_masks(labels[Path(name).name])
        assert [c for c, _ in found] == [c - 1 for c, _ in masks], name  # not background
        assert iou(found[0][1], masks[0][1]) == 1.0


# --- EXIF orientation -----------------------------------------------------------------------------


def rotated_photo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Save a photo whose upright view (60 high, 40 wide) has a red box, stored rotated with EXIF
    orientation 6 (the stored pixels are 40 high, 60 wide). Returns the upright pixels and the box mask."""
    upright = np.asarray(small_photo("astronaut.png", long_side=60).convert("RGB").resize((40, 60))).copy()
    box = box_mask((60, 40), 5, 8, 25, 30)
    upright[box] = (255, 0, 0)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(path, quality=100, exif=exif)
    return upright, box


def test_rotated_photo_lines_up_in_coco_detection(tmp_path: Path) -> None:
    """The masks are in the upright frame; coco-polygons writes an upright copy, so torchvision's
    ``CocoDetection`` (plain PIL, no EXIF) gives pixels and masks in the same frame."""
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    from gem_sam.images import load_image

    images = tmp_path / "images"
    images.mkdir()
    upright, box = rotated_photo(images / "phone.jpg")
    assert load_image(images / "phone.jpg").shape[:2] == (60, 40)  # what labelling sees
    coco = write_coco(tmp_path / "a.json", images, [("phone.jpg", (60, 40), [(1, box)])], ["red"])
    out = tmp_path / "poly"
    code, stdout, _ = export(str(coco), "--to", "coco-polygons", "--out", str(out))
    assert code == 0 and "EXIF-rotated photos written as upright copies: 1" in stdout
    data = json.loads((out / "annotations.json").read_text())
    assert data["info"]["images_dir"] == str((out / "images").resolve())
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = wrap_dataset_for_transforms_v2(
            CocoDetection(data["info"]["images_dir"], str(out / "annotations.json")), target_keys=("masks", "labels")
        )
    image, target = dataset[0]
    pixels = np.asarray(image)
    masks = target["masks"].numpy().astype(bool)
    assert pixels.shape[:2] == masks.shape[1:] == (60, 40)
    np.testing.assert_array_equal(masks[0], box)
    assert np.abs(pixels.astype(int) - upright).mean() < 16  # the upright photo (JPEG noise aside)
    inner = box_mask((60, 40), 7, 10, 23, 28)
    assert (pixels[inner][:, 0] > 200).all() and (pixels[inner][:, 1] < 80).all()  # the red box, under the mask


def test_rotated_photo_in_ultralytics_and_semantic(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    upright, box = rotated_photo(images / "phone.jpg")
    coco = write_coco(tmp_path / "a.json", images, [("phone.jpg", (60, 40), [(1, box)])], ["red"])
    assert export(str(coco), "--to", "yolo-seg", "--out", str(tmp_path / "yolo"))[0] == 0
    copy = tmp_path / "yolo" / "images" / "phone.jpg"
    assert not copy.is_symlink() and Image.open(copy).getexif().get(EXIF_ORIENTATION, 1) == 1
    label = read_with_ultralytics(tmp_path / "yolo" / "data.yaml", tmp_path)["splits"]["train"][0]
    assert label["shape"] == [60, 40] and iou(ultralytics_masks(label)[0][1], box) == 1.0

    assert export(str(coco), "--to", "semantic", "--out", str(tmp_path / "sem"))[0] == 0
    labels = np.asarray(Image.open(tmp_path / "sem" / "labels" / "phone.png"))
    photo = np.asarray(Image.open(tmp_path / "sem" / "images" / "phone.jpg"))
    assert labels.shape == photo.shape[:2] == (60, 40) and np.abs(photo.astype(int) - upright).mean() < 16
    np.testing.assert_array_equal(labels == 1, box)


# --- many classes, names outside the BMP ------------------------------------------------------------


def test_semantic_with_more_than_255_classes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    small_photo("coffee.png", long_side=32).convert("RGB").save(images / "a.jpg")
    size_hw = np.asarray(Image.open(images / "a.jpg")).shape[:2]
    names = [f"class {i}" for i in range(1, 301)]
    coco = write_coco(
        tmp_path / "a.json", images, [("a.jpg", size_hw, [(300, box_mask(size_hw, 0, 0, 5, 5)),
                             (7, box_mask(size_hw, 10, 10, 12, 12))])],
        names,
    )  # fmt: skip
    code, _, err = export(str(coco), "--to", "semantic", "--out", str(tmp_path / "sem"))
    assert code == 0, err
    saved = Image.open(tmp_path / "sem" / "labels" / "a.png")
    labels = np.asarray(saved)
    assert saved.mode == "I;16" and labels.dtype == np.uint16
    assert labels[0, 0] == 300 and labels[11, 11] == 7 and labels[20, 20] == 0


@pytest.mark.parametrize(
    "name", ["cat 🐱", "naïve café", 'say "hi"', "back\\slash", "tab\there", "line\u2028sep", "猫"]
)
def test_yaml_quoted_round_trips(name: str) -> None:
    assert yaml.safe_load(f"name: {yaml_quoted(name)}\n") == {"name": name}


def test_emoji_class_names_survive_data_yaml(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    small_photo("coffee.png", long_side=32).convert("RGB").save(images / "a.jpg")
    size_hw = np.asarray(Image.open(images / "a.jpg")).shape[:2]
    names = ["cat 🐱", "dog 🐶", "plain"]
    coco = write_coco(tmp_path / "a.json", images, [("a.jpg", size_hw, [(2, box_mask(size_hw, 1, 1, 9, 9))])], names)
    assert export(str(coco), "--to", "yolo-seg", "--out", str(tmp_path / "yolo"))[0] == 0
    text = (tmp_path / "yolo" / "data.yaml").read_text(encoding="utf-8")
    assert "\\ud83d" not in text
    assert yaml.safe_load(text)["names"] == {0: "cat 🐱", 1: "dog 🐶", 2: "plain"}
    assert read_with_ultralytics(tmp_path / "yolo" / "data.yaml", tmp_path)["names"] == {
        "0": "cat 🐱",
        "1": "dog 🐶",
        "2": "plain",
    }


# --- overwrite, splits ----------------------------------------------------------------------------


@pytest.fixture
def four_images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for index, photo in enumerate(["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]):
        name = f"{photo.split('.')[0]}.jpg"
        small_photo(photo, long_side=48).convert("RGB").save(images / name)
        size_hw = np.asarray(Image.open(images / name)).shape[:2]
        entries.append((name, size_hw, [(1 + index % 2, box_mask(size_hw, 2, 2, 20, 20 + index))]))
    return write_coco(tmp_path / "a.json", images, entries, ["person", "cup"])


def test_overwrite_replaces_an_earlier_export_only(four_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    assert export(str(four_images), "--to", "yolo-seg", "--out", str(out), "--val-fraction", "0.5")[0] == 0
    assert (out / "images" / "val").is_dir()
    code, _, _ = export(str(four_images), "--to", "yolo-seg", "--out", str(out), "--overwrite")
    assert code == 0
    assert not (out / "images" / "val").exists() and not (out / "labels" / "train").exists()
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "astronaut.txt",
        "chelsea.txt",
        "coffee.txt",
        "rocket.txt",
    ]
    # the labelled images behind the links are untouched
    assert all(p.is_file() and not p.is_symlink() for p in (tmp_path / "images").iterdir())

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("years of work")
    before = folder_state(foreign)
    code, _, err = export(str(four_images), "--to", "semantic", "--out", str(foreign), "--overwrite")
    assert code == 2 and "is not a gem_sam export" in err and len(err.strip().splitlines()) == 1
    assert folder_state(foreign) == before


def test_yolo_split_is_deterministic_and_read_by_ultralytics(four_images: Path, tmp_path: Path) -> None:
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        code, stdout, _ = export(
            str(four_images), "--to", "yolo-seg", "--out", str(out), "--val-fraction", "0.25", "--seed", "3"
        )
        assert code == 0 and "split: 3 train, 1 val" in stdout
    assert folder_state(outs[0] / "labels") == folder_state(outs[1] / "labels")
    data = yaml.safe_load((outs[0] / "data.yaml").read_text())
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    read = read_with_ultralytics(outs[0] / "data.yaml", tmp_path)
    train = {Path(label["im_file"]).name for label in read["splits"]["train"]}
    val = {Path(label["im_file"]).name for label in read["splits"]["val"]}
    assert len(train) == 3 and len(val) == 1 and not train & val
    assert train | val == {"astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg"}
    assert all(len(label["cls"]) == 1 for split in read["splits"].values() for label in split)


def test_coco_polygons_split_into_two_files(four_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "poly"
    code, stdout, _ = export(
        str(four_images), "--to", "coco-polygons", "--out", str(out), "--val-fraction", "0.5", "--seed", "2"
    )
    assert code == 0 and "split: 2 train, 2 val" in stdout
    files = {split: json.loads((out / f"annotations_{split}.json").read_text()) for split in ("train", "val")}
    names = [{image["file_name"] for image in files[split]["images"]} for split in ("train", "val")]
    assert not names[0] & names[1] and len(names[0] | names[1]) == 4
    for data in files.values():
        images_dir = Path(data["info"]["images_dir"])
        assert all((images_dir / image["file_name"]).is_file() for image in data["images"])
        assert {a["image_id"] for a in data["annotations"]} == {image["id"] for image in data["images"]}


def test_split_draws_each_image_from_its_own_name() -> None:
    names = [f"img{i:05d}.jpg" for i in range(10_000)]
    splits = split_names(names, val_fraction=0.2, seed=0)
    share = sum(split == "val" for split in splits.values()) / len(names)
    assert abs(share - 0.2) < 0.012  # three standard deviations of a binomial share at n = 10,000
    assert splits == split_names(list(reversed(names)), val_fraction=0.2, seed=0)  # order does not matter
    assert split_names(names[:100], val_fraction=0.2, seed=0) == {name: splits[name] for name in names[:100]}
    assert split_names(names, val_fraction=0.2, seed=1) != splits  # the seed draws another split


def test_adding_images_never_moves_one_between_splits(tmp_path: Path) -> None:
    """Ten images exported with a split, then the same ten and one more: no image changes its split,
    and the counts are printed."""
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for index in range(11):
        name = f"img{index:03d}.jpg"
        small_photo(["astronaut.png", "coffee.png", "chelsea.png"][index % 3], long_side=24).convert("RGB").save(
            images / name
        )
        size_hw = np.asarray(Image.open(images / name)).shape[:2]
        entries.append((name, size_hw, [(1, box_mask(size_hw, 1, 1, 10, 10))]))
    placed = {}
    for count in (10, 11):
        coco = write_coco(tmp_path / f"run{count}.json", images, entries[:count], ["thing"])
        out = tmp_path / f"yolo{count}"
        code, stdout, _ = export(str(coco), "--to", "yolo-seg", "--out", str(out), "--val-fraction", "0.3")
        assert code == 0
        placed[count] = {path.name: path.parent.name for path in (out / "images").rglob("*.jpg")}
        train, val = (sum(split == name for split in placed[count].values()) for name in ("train", "val"))
        assert f"split: {train} train, {val} val" in stdout and train + val == count
    assert {name: placed[11][name] for name in placed[10]} == placed[10]
    assert set(placed[10].values()) == {"train", "val"}


@pytest.mark.parametrize("fraction", ["0", "1", "-0.1", "1.5"])
def test_bad_val_fraction(four_images: Path, tmp_path: Path, fraction: str) -> None:
    code, _, err = export(
        str(four_images), "--to", "yolo-seg", "--out", str(tmp_path / "y"), "--val-fraction", fraction
    )
    assert code == 2 and f"--val-fraction {float(fraction):g}" in err and "between 0 and 1" in err
    assert not (tmp_path / "y").exists()


def test_dedupe_iou_one_removes_exact_duplicates(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    small_photo("coffee.png", long_side=32).convert("RGB").save(images / "a.jpg")
    size_hw = np.asarray(Image.open(images / "a.jpg")).shape[:2]
    same = box_mask(size_hw, 1, 1, 9, 9)
    coco = write_coco(
        tmp_path / "a.json", images, [("a.jpg", size_hw, [(1, same), (1, same.copy()), (2, same)])], ["a", "b"]
    )
    code, stdout, _ = export(str(coco), "--to", "coco-polygons", "--out", str(tmp_path / "p"), "--dedupe-iou", "1.0")
    assert code == 0 and "dropped by the quality controls: 1" in stdout  # the other class's copy stays
    kept = json.loads((tmp_path / "p" / "annotations.json").read_text())["annotations"]
    assert sorted(a["category_id"] for a in kept) == [1, 2]
