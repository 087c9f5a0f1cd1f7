"""Exports of a finished run's COCO file: YOLO-seg, COCO polygons, semantic label maps, FiftyOne.

``python -m gem_sam.export annotations.json --to FORMAT --out DIR``; the COCO file stays the one
source of truth.
"""

from .coco_polygons import export_coco_polygons
from .fiftyone_dataset import fiftyone_samples, load_fiftyone_dataset
from .layout import PlacedImage, plan_images, prepare_out_dir, start_export
from .polygons import join_pieces, mask_to_polygons
from .semantic import export_semantic, label_map
from .source import RunOutput, read_run_output
from .stats import ExportStats
from .yolo import export_yolo_seg

__all__ = [
    "ExportStats",
    "PlacedImage",
    "RunOutput",
    "export_coco_polygons",
    "export_semantic",
    "export_yolo_seg",
    "fiftyone_samples",
    "join_pieces",
    "label_map",
    "load_fiftyone_dataset",
    "mask_to_polygons",
    "plan_images",
    "prepare_out_dir",
    "read_run_output",
    "start_export",
]
