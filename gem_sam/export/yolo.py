"""Ultralytics YOLO-seg dataset layout.

    OUT/images/<name>                 the labelled images (symbolic links, or copies; rotated photos as
                                      upright copies)
    OUT/labels/<name stem>.txt        one line per instance: class x1 y1 x2 y2 ... (normalised to [0, 1])
    OUT/data.yaml                     path, train and val, names

With ``--val-fraction`` the images and labels are split into ``train/`` and ``val/`` sub-folders
(``images/train/...``, ``labels/val/...``) and ``data.yaml`` points at each. A label file lies where
Ultralytics' own rule looks for it: the image's path with its last ``/images/`` replaced by ``/labels/``
and the extension by ``.txt`` (so an image at ``images/data/images/x.jpg`` has its labels at
``images/data/labels/x.txt``). Images whose names differ only in their extension are renamed
(``paths.distinct_names``) so that each keeps its own label file.

An instance is one polygon line. A mask in several pieces becomes one outline through all of them,
joined by bridges walked there and back (``polygons.join_pieces``), as Ultralytics' own COCO converter
joins segments. Holes are filled. Images without masks get an empty label file (background images).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..mask_ops import decode_rle
from .layout import PlacedImage, write_images
from .polygons import DEFAULT_MIN_POLYGON_AREA, join_pieces, mask_to_polygons
from .source import RunOutput
from .stats import ExportStats

SPLITS: tuple[str, ...] = ("train", "val")


def yolo_line(class_index: int, outline: np.ndarray, size_hw: tuple[int, int]) -> str:
    """``class x1 y1 ...`` with the outline [K, 2] (x, y pixels) normalised by the image size."""
    height, width = size_hw
    normalised = np.clip(outline / np.array([width, height], dtype=np.float64), 0.0, 1.0)
    return " ".join([str(class_index), *(f"{value:.6f}" for value in normalised.ravel())])


def outline_pixels(outline: np.ndarray, size_hw: tuple[int, int]) -> int:
    """Pixels of the outline filled as Ultralytics fills it (``cv2.fillPoly`` on integer pixels)."""
    canvas = np.zeros(size_hw, dtype=np.uint8)
    cv2.fillPoly(canvas, [np.floor(outline).astype(np.int32)], 1)
    return int(canvas.sum())


def label_path(image_path: str) -> str:
    """Ultralytics' label file of an image path relative to the dataset folder (``images/...``): the
    last ``/images/`` becomes ``/labels/`` and the extension ``.txt``."""
    head, tail = f"/{image_path}".rsplit("/images/", 1)
    return f"{head}/labels/{tail}"[1:].rsplit(".", 1)[0] + ".txt"


def yaml_quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar: printable characters are written as they are (UTF-8,
    emoji included); the quote, the backslash, control characters, line separators and code points
    YAML cannot carry are escaped."""
    out = []
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif (
            code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFFFE, 0xFFFF) or 0xD800 <= code <= 0xDFFF
        ):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def data_yaml(out_dir: Path, names: list[str], *, split: bool) -> str:
    """The dataset file (UTF-8): ``path``, ``train`` and ``val`` (both ``images`` without a split) and
    ``names``."""
    train, val = ("images/train", "images/val") if split else ("images", "images")
    lines = [f"path: {yaml_quoted(str(out_dir.resolve()))}", f"train: {train}", f"val: {val}", "names:"]
    lines += [f"  {index}: {yaml_quoted(name)}" for index, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def export_yolo_seg(
    run: RunOutput,
    out_dir: Path,
    *,
    min_polygon_area: float = DEFAULT_MIN_POLYGON_AREA,
    copy_images: bool = False,
    placed: Sequence[PlacedImage] | None = None,
    final_dir: Path | None = None,
) -> ExportStats:
    """Write ``run`` into ``out_dir`` as an Ultralytics YOLO-seg dataset.

    ``placed``: where each image goes (``layout.plan_images``, e.g. with a validation split); by
    default every image under its own name, checked before anything is written, without a split.
    ``final_dir``: the folder the dataset will be read from, when ``out_dir`` is a staging folder that
    is moved there (the paths written into the files point at it; default ``out_dir``)."""
    placed = write_images(run.images, run.image_path, out_dir, placed=placed, copy=copy_images)
    stats = ExportStats(dropped_by_controls=run.dropped)
    for item in placed:
        image = item.image
        size_hw = (image["height"], image["width"])
        lines = []
        for annotation in run.annotations.get(image["id"], []):
            mask = decode_rle(annotation["segmentation"])
            pieces = mask_to_polygons(mask, min_area=min_polygon_area)
            if not pieces:
                stats.dropped_small += 1
                continue
            outline = join_pieces(pieces)
            lines.append(yolo_line(annotation["category_id"] - 1, outline, size_hw))
            stats.record_area(polygon_pixels=outline_pixels(outline, size_hw), mask_pixels=int(mask.sum()))
        labels = out_dir / label_path(f"images/{item.relative}")
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        stats.images += 1
        stats.instances += len(lines)
        if item.split:
            stats.split_counts[item.split] = stats.split_counts.get(item.split, 0) + 1
    split = any(item.split for item in placed)
    (out_dir / "data.yaml").write_text(data_yaml(final_dir or out_dir, run.names, split=split), encoding="utf-8")
    return stats
