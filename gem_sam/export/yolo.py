"""Ultralytics YOLO-seg dataset layout.

    OUT/images/<file_name>           the labelled images (symbolic links, or copies)
    OUT/labels/<file_name stem>.txt  one line per instance: class x1 y1 x2 y2 ... (normalised to [0, 1])
    OUT/data.yaml                    path, train and val (both images/), names

An instance is one polygon line. A mask in several pieces becomes one outline through all of them,
joined by bridges walked there and back (``polygons.join_pieces``), as Ultralytics' own COCO converter
joins segments. Holes are filled. Images without masks get an empty label file (background images).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from ..mask_ops import decode_rle
from .polygons import join_pieces, mask_to_polygons
from .source import RunOutput
from .stats import ExportStats


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


def data_yaml(out_dir: Path, names: list[str]) -> str:
    """The dataset file; strings are written JSON-quoted, which YAML reads as double-quoted scalars."""
    lines = [f"path: {json.dumps(str(out_dir.resolve()))}", "train: images", "val: images", "names:"]
    lines += [f"  {index}: {json.dumps(name)}" for index, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def place_image(source: Path, target: Path, *, copy: bool) -> None:
    """Link (default) or copy an image into the dataset; a missing source is an error."""
    if not source.is_file():
        raise FileNotFoundError(f"image {str(source)!r} does not exist; pass the labelled folder with --images")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if copy:
        shutil.copy2(source, target)
    else:
        os.symlink(source.resolve(), target)


def export_yolo_seg(run: RunOutput, out_dir: Path, *, copy_images: bool, min_polygon_area: float) -> ExportStats:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = ExportStats(dropped_by_controls=run.dropped)
    for image in run.images:
        size_hw = (image["height"], image["width"])
        place_image(run.image_path(image), out_dir / "images" / image["file_name"], copy=copy_images)
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
        label_path = (out_dir / "labels" / image["file_name"]).with_suffix(".txt")
        label_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.write_text("".join(line + "\n" for line in lines))
        stats.images += 1
        stats.instances += len(lines)
    (out_dir / "data.yaml").write_text(data_yaml(out_dir, run.names), encoding="utf-8")
    return stats
