"""Readers for the dense benchmarks in their standard released layouts, with their class names.

Every reader yields ``DenseItem``s (an id, the image file, the label file) and maps a label PNG to
[H, W] classes 0..K-1 with 255 for ignored pixels:

* ``voc``: Pascal VOC 2012 val, ``ROOT/JPEGImages/{id}.jpg``, ``ROOT/SegmentationClass/{id}.png``
  (palette PNG, 0 background, 1..20 classes, 255 ignored), ids from
  ``ROOT/ImageSets/Segmentation/val.txt``. 21 classes: background (0) and the 20 objects.
* ``context``: Pascal Context, 59 classes, in the common label-map layout (as made by mmsegmentation's
  converter): ``ROOT/JPEGImages/{id}.jpg``, ``ROOT/SegmentationClassContext/{id}.png`` (0 background,
  1..59), ids from ``ROOT/ImageSets/SegmentationContext/val.txt``. Background is ignored; labels shift
  down by one.
* ``ade20k``: ADE20K val, ``ROOT/images/validation/*.jpg`` and ``ROOT/annotations/validation/*.png``
  (ROOT is ``ADEChallengeData2016``); 0 ("other") is ignored, labels shift down by one; 150 classes.

Class names are those of the common open-vocabulary code bases (mmsegmentation's lists, written as
words: "dining table" for "diningtable").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .confusion import IGNORE

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
)  # fmt: skip
CONTEXT_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "potted plant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tv monitor", "wall", "water", "window", "wood",
)  # fmt: skip
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet", "sidewalk",
    "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa",
    "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand",
    "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat",
    "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal",
    "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip
BACKGROUND_THRESHOLD = 0.85  # VOC: background where no class's softmax probability reaches this


@dataclass(frozen=True)
class DenseItem:
    """One image of a benchmark: its id and the image and label files."""

    item_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class DenseDataset:
    """A benchmark's items, prompt names and label convention."""

    name: str  # voc | context | ade20k
    items: tuple[DenseItem, ...]
    class_names: tuple[str, ...]  # names prompted, in label order (VOC: the 20 objects)
    has_background: bool  # VOC: class 0 is background, predicted by the threshold rule
    reduce_zero_label: bool  # Context, ADE20K: label 0 is ignored and labels shift down by one

    @property
    def n_classes(self) -> int:
        """Classes in the metric (VOC: background + 20)."""
        return len(self.class_names) + int(self.has_background)

    @property
    def metric_class_names(self) -> tuple[str, ...]:
        return (("background",) if self.has_background else ()) + self.class_names

    def read_labels(self, item: DenseItem) -> np.ndarray:
        """[H, W] int64 classes 0..K-1, IGNORE where left out."""
        with Image.open(item.label) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"label file {str(item.label)!r} has mode {image.mode}, not a label map")
            labels = np.asarray(image).astype(np.int64)
        if self.reduce_zero_label:
            labels = np.where(labels == 0, IGNORE, labels - 1)
            labels[labels == IGNORE - 1] = IGNORE  # 255 in the file stays ignored
        return labels


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} is missing; see the layouts in gem_sam/dense_datasets.py")
    return path


def _ids(split_file: Path) -> list[str]:
    return [line.strip() for line in _require(split_file, "split file").read_text().splitlines() if line.strip()]


def load_dense_dataset(
    name: str, root: str | os.PathLike, *, class_names: tuple[str, ...] | None = None
) -> DenseDataset:
    """The benchmark ``name`` (voc | context | ade20k) under ``root``; ``class_names`` replace the
    default prompt names (as many, in label order). Missing folders or split files are errors."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {str(root)!r} is not a folder")
    if name == "voc":
        images, labels = _require(root / "JPEGImages", "folder"), _require(root / "SegmentationClass", "folder")
        ids = _ids(root / "ImageSets" / "Segmentation" / "val.txt")
        items = [DenseItem(i, images / f"{i}.jpg", labels / f"{i}.png") for i in ids]
        defaults, background, reduce_zero = VOC_CLASSES, True, False
    elif name == "context":
        images, labels = _require(root / "JPEGImages", "folder"), _require(root / "SegmentationClassContext", "folder")
        ids = _ids(root / "ImageSets" / "SegmentationContext" / "val.txt")
        items = [DenseItem(i, images / f"{i}.jpg", labels / f"{i}.png") for i in ids]
        defaults, background, reduce_zero = CONTEXT_CLASSES, False, True
    elif name == "ade20k":
        images = _require(root / "images" / "validation", "folder")
        labels = _require(root / "annotations" / "validation", "folder")
        items = [DenseItem(p.stem, p, labels / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
        defaults, background, reduce_zero = ADE20K_CLASSES, False, True
    else:
        raise ValueError(f"dataset {name!r} is not one of voc, context, ade20k")
    if class_names is not None and len(class_names) != len(defaults):
        raise ValueError(
            f"--class-names gives {len(class_names)} names; {name} needs {len(defaults)}, one per line in label order"
            + (" (the 20 objects, without background)" if background else "")
        )
    if not items:
        raise FileNotFoundError(f"no images listed for {name} under {str(root)!r}")
    return DenseDataset(
        name=name,
        items=tuple(items),
        class_names=tuple(class_names) if class_names is not None else defaults,
        has_background=background,
        reduce_zero_label=reduce_zero,
    )
