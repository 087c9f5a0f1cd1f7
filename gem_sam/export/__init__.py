"""Exports of a finished run's COCO file: YOLO-seg, COCO polygons, semantic label maps, FiftyOne.

``python -m gem_sam.export annotations.json --to FORMAT --out DIR``; the COCO file stays the one
source of truth.
"""

from .coco_polygons import export_coco_polygons
from .fiftyone_dataset import fiftyone_samples, load_fiftyone_dataset
from .layout import PlacedImage, plan_images
from .out_folder import OutFolder, check_out_folder, staged_export
from .polygons import join_pieces, mask_to_polygons
from .semantic import export_semantic, label_map
from .source import RunOutput, read_run_output
from .stats import ExportStats
from .yolo import export_yolo_seg

__all__ = [
    "ExportStats",
    "OutFolder",
    "PlacedImage",
    "RunOutput",
    "check_out_folder",
    "export_coco_polygons",
    "export_semantic",
    "export_yolo_seg",
    "fiftyone_samples",
    "join_pieces",
    "label_map",
    "load_fiftyone_dataset",
    "mask_to_polygons",
    "plan_images",
    "read_run_output",
    "staged_export",
]
