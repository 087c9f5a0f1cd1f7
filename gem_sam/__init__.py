"""gem_sam: open-vocabulary auto-labelling with GEM (Grounding Everything) and SAM grid masks.

The parts (see "How the code is laid out" in the README): ``naming`` (GEM and the baselines, text
embeddings, the vocabulary), ``sam`` (grid mask generation), ``labelling`` (runs that name masks and
write COCO), ``evaluation`` (the paper's benchmarks), ``export`` (files for trainers and review tools)
and ``cli`` (the ``gem-sam`` command).
"""

__version__ = "0.1.0"

from .images import ImageReadError, find_images, load_image
from .labelling import (
    AutoLabeller,
    LabelConfig,
    LabelledImage,
    LabellerSpec,
    QualityControls,
    RunSummary,
    build_coco,
    label_folder,
    label_folder_ray,
)
from .mask_ops import pool_in_masks
from .naming import (
    DensePathConfig,
    DenseVisionEncoder,
    GemScorer,
    ScorerConfig,
    SelfSelfAttention,
    Vocabulary,
    annotations_review_priority,
    build_gem_scorer,
    label_masks,
    read_vocabulary,
    review_priority,
)
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
    "QualityControls",
    "RunSummary",
    "SAM2_VARIANTS",
    "SAM_ARCHITECTURES",
    "Sam2GeneratorConfig",
    "SamArchitecture",
    "ScorerConfig",
    "SelfSelfAttention",
    "Vocabulary",
    "annotations_review_priority",
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
    "review_priority",
    "sam_model_names",
]
