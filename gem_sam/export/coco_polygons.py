"""The run's COCO file with polygon segmentations, for tools that take no RLE.

    OUT/annotations.json              (with --val-fraction: annotations_train.json, annotations_val.json)
    OUT/images/<name>                 the images (links or copies; rotated photos as upright copies;
                                      with a split, under images/train/ and images/val/)

Each annotation's ``segmentation`` is a list of polygons (one per piece, ``[x1, y1, x2, y2, ...]``),
holes filled; its ``area`` and ``bbox`` are those of the polygons as pycocotools rasterises them, so
the file stays consistent for COCOeval. An annotation whose pieces are all below
``--min-polygon-area`` is dropped. ``info.images_dir`` and each ``file_name`` point at the images
written here, which are upright: any COCO loader (torchvision's ``CocoDetection`` opens files with
plain PIL) sees masks and pixels in the same frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from ..mask_ops import decode_rle
from .layout import PlacedImage, write_images
from .polygons import DEFAULT_MIN_POLYGON_AREA, mask_to_polygons, rasterize_coco_polygons
from .source import RunOutput
from .stats import ExportStats

OUTPUT_NAME = "annotations.json"


def output_name(split: str | None) -> str:
    """``annotations.json``, or ``annotations_<split>.json`` for one part of a split."""
    return f"annotations_{split}.json" if split else OUTPUT_NAME


def polygon_annotations(
    run: RunOutput, image: dict[str, Any], *, min_polygon_area: float, stats: ExportStats
) -> list[dict[str, Any]]:
    """One image's annotations with polygon segmentations (ids still the run's)."""
    size_hw = (image["height"], image["width"])
    out = []
    for annotation in run.annotations.get(image["id"], []):
        mask = decode_rle(annotation["segmentation"])
        polygons = mask_to_polygons(mask, min_area=min_polygon_area)
        if not polygons:
            stats.dropped_small += 1
            continue
        rasterised = rasterize_coco_polygons(polygons, size_hw)
        area = int(mask_utils.area(rasterised))
        stats.record_area(polygon_pixels=area, mask_pixels=int(mask.sum()))
        out.append(
            {
                **annotation,
                "segmentation": [[round(float(v), 3) for v in polygon.ravel()] for polygon in polygons],
                "area": area,
                "bbox": [float(v) for v in mask_utils.toBbox(rasterised)],
            }
        )
    return out


def export_coco_polygons(
    run: RunOutput,
    out_dir: Path,
    *,
    min_polygon_area: float = DEFAULT_MIN_POLYGON_AREA,
    copy_images: bool = False,
    placed: Sequence[PlacedImage] | None = None,
    final_dir: Path | None = None,
) -> ExportStats:
    """Write the polygon file(s) of ``run`` and its images into ``out_dir``: one file, or one per split
    of ``placed`` (see ``export_yolo_seg`` for ``placed`` and ``final_dir``)."""
    placed = write_images(run.images, run.image_path, out_dir, placed=placed, copy=copy_images)
    stats = ExportStats(dropped_by_controls=run.dropped)
    for split in sorted({item.split for item in placed}, key=lambda name: name or ""):
        images, annotations = [], []
        for item in (item for item in placed if item.split == split):
            images.append({**item.image, "file_name": item.name})
            for annotation in polygon_annotations(run, item.image, min_polygon_area=min_polygon_area, stats=stats):
                annotations.append({**annotation, "id": len(annotations) + 1})
            stats.images += 1
        if split:
            stats.split_counts[split] = len(images)
        stats.instances += len(annotations)
        images_dir = (final_dir or out_dir) / "images" / (split or "")
        data = {
            "info": {**run.info, "images_dir": str(images_dir.resolve()), "segmentation": "polygons, holes filled"},
            "images": images,
            "annotations": annotations,
            "categories": run.categories,
        }
        (out_dir / output_name(split)).write_text(json.dumps(data), encoding="utf-8")
    return stats
