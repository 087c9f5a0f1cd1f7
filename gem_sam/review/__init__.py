"""Review: gem_sam's masks as Label Studio tasks and predictions, the reviewed labels back as a gem_sam
COCO file, and a Label Studio ML backend."""

from .brush import brush_rle_to_mask, mask_to_brush_rle, polygon_to_mask
from .label_studio import export_label_studio, label_config, model_version
from .reviewed import ReviewCounts, ReviewError, import_reviewed

__all__ = [
    "ReviewCounts",
    "ReviewError",
    "brush_rle_to_mask",
    "export_label_studio",
    "import_reviewed",
    "label_config",
    "mask_to_brush_rle",
    "model_version",
    "polygon_to_mask",
]
