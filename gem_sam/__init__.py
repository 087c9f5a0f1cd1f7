"""gem_sam: open-vocabulary auto-labelling with GEM (Grounding Everything) and SAM grid masks."""

__version__ = "0.1.0"

from .coco import LabelledImage, build_coco
from .gem import DensePathConfig, DenseVisionEncoder, SelfSelfAttention
from .images import ImageReadError, find_images, load_image
from .labeller_spec import LabellerSpec
from .labelling import LabelConfig, label_masks
from .mask_generator import GridMaskGenerator, MaskGeneratorConfig, build_mask_generator
from .mask_ops import pool_in_masks
from .pipeline import AutoLabeller, RunSummary, label_folder
from .ray_engine import label_folder_ray
from .sam_model import SAM_ARCHITECTURES, SamArchitecture, load_sam, register_sam_architecture
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
    "SAM_ARCHITECTURES",
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
    "pool_in_masks",
    "read_vocabulary",
    "register_sam_architecture",
]
