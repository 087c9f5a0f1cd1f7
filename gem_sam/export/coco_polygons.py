"""The run's COCO file with polygon segmentations, for tools that take no RLE.

Each annotation's ``segmentation`` is a list of polygons (one per piece, ``[x1, y1, x2, y2, ...]``),
holes filled; its ``area`` and ``bbox`` are those of the polygons as pycocotools rasterises them, so
the file stays consistent for COCOeval. An annotation whose pieces are all below
``--min-polygon-area`` is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

from pycocotools import mask as mask_utils

from ..mask_ops import decode_rle
from .polygons import mask_to_polygons, rasterize_coco_polygons
from .source import RunOutput
from .stats import ExportStats

OUTPUT_NAME = "annotations.json"


def export_coco_polygons(run: RunOutput, out_dir: Path, *, min_polygon_area: float) -> ExportStats:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = ExportStats(dropped_by_controls=run.dropped)
    annotations = []
    for image in run.images:
        size_hw = (image["height"], image["width"])
        for annotation in run.annotations.get(image["id"], []):
            mask = decode_rle(annotation["segmentation"])
            polygons = mask_to_polygons(mask, min_area=min_polygon_area)
            if not polygons:
                stats.dropped_small += 1
                continue
            rasterised = rasterize_coco_polygons(polygons, size_hw)
            area = int(mask_utils.area(rasterised))
            stats.record_area(polygon_pixels=area, mask_pixels=int(mask.sum()))
            annotations.append(
                {
                    **annotation,
                    "id": len(annotations) + 1,
                    "segmentation": [[round(float(v), 3) for v in polygon.ravel()] for polygon in polygons],
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rasterised)],
                }
            )
        stats.images += 1
    stats.instances = len(annotations)
    data = {
        "info": {**run.info, "segmentation": "polygons, holes filled"},
        "images": run.images,
        "annotations": annotations,
        "categories": run.categories,
    }
    (out_dir / OUTPUT_NAME).write_text(json.dumps(data), encoding="utf-8")
    return stats
