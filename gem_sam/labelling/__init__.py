"""Labelling runs: SAM masks named by GEM, per-image records that resume, quality controls, the COCO
file, overlays, the run report, and the Ray engine."""

from .coco import LabelledImage, build_coco, write_coco_streaming
from .config import LabelConfig
from .pipeline import AutoLabeller, RunSummary, label_folder
from .quality import QualityControls, select_masks
from .ray_engine import label_folder_ray
from .report import RunReport, save_report_png
from .spec import LabellerSpec

__all__ = [
    "AutoLabeller",
    "LabelConfig",
    "LabellerSpec",
    "LabelledImage",
    "QualityControls",
    "RunReport",
    "RunSummary",
    "build_coco",
    "label_folder",
    "label_folder_ray",
    "save_report_png",
    "select_masks",
    "write_coco_streaming",
]
