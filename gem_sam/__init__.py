"""gem_sam: open-vocabulary auto-labelling with GEM (Grounding Everything) and SAM grid masks."""

__version__ = "0.1.0"

from .coco import LabelledImage, build_coco
from .gem import DensePathConfig, DenseVisionEncoder, SelfSelfAttention
from .images import ImageReadError, find_images, load_image
from .labeller_spec import LabellerSpec
from .labelling import LabelConfig, label_masks
from .mask_ops import pool_in_masks
from .pipeline import AutoLabeller, RunSummary, label_folder
from .ray_engine import label_folder_ray
from .sam import (
    SAM2_VARIANTS,
    SAM_ARCHITECTURES,
    GridMaskGenerator,
    MaskGeneratorConfig,
    Sam2GeneratorConfig,
    SamArchitecture,
    build_mask_generator,
    load_sam,
    load_sam2,
    register_sam_architecture,
    sam_model_names,
)
from .scorer import GemScorer, ScorerConfig, build_gem_scorer
from .vocab import read_vocabulary

__all__ = [
    "AutoLabeller",
    "DensePathConfig",
    "DenseVisionEncoder",
    "GemScorer",
    "GridMaskGenerator",
    "ImageReadError",
    "LabelConfig",
    "LabellerSpec",
    "LabelledImage",
    "MaskGeneratorConfig",
    "RunSummary",
    "SAM2_VARIANTS",
    "SAM_ARCHITECTURES",
    "Sam2GeneratorConfig",
    "SamArchitecture",
    "ScorerConfig",
    "SelfSelfAttention",
    "build_coco",
    "build_gem_scorer",
    "build_mask_generator",
    "find_images",
    "label_folder",
    "label_folder_ray",
    "label_masks",
    "load_image",
    "load_sam",
    "load_sam2",
    "pool_in_masks",
    "read_vocabulary",
    "register_sam_architecture",
    "sam_model_names",
]
