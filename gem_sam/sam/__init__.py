"""Class-agnostic mask generators: SAM 1 and SAM 2 / 2.1 prompted with a grid of points.

Layout:

* model builders: ``sam1_model`` (ViT-B/L/H), ``sam2_model`` (Hiera t/s/b+/l, SAM 2 and 2.1);
* encoders and decoders: ``sam1_encoder`` (SAM 1's ViT with banded attention), ``point_decoder``
  (the two-way decoder of both families for many point prompts) on ``low_rank_tokens``;
* the grid generator: ``grid_generator`` with its settings (``config``) and the per-family image,
  prompt and upsampling conventions (``adapters``).
"""

from .config import MaskGeneratorConfig, Sam2GeneratorConfig, generator_config, is_sam2_model
from .grid_generator import GridMaskGenerator, build_mask_generator
from .sam1_model import SAM_ARCHITECTURES, SamArchitecture, build_sam_model, load_sam, register_sam_architecture
from .sam2_model import SAM2_VARIANTS, build_sam2_model, load_sam2


def sam_model_names() -> list[str]:
    """Every model name ``build_mask_generator`` takes: SAM 1 first, then SAM 2.1 and SAM 2."""
    return [*SAM_ARCHITECTURES, *SAM2_VARIANTS]


__all__ = [
    "GridMaskGenerator",
    "MaskGeneratorConfig",
    "SAM2_VARIANTS",
    "SAM_ARCHITECTURES",
    "Sam2GeneratorConfig",
    "SamArchitecture",
    "build_mask_generator",
    "build_sam2_model",
    "build_sam_model",
    "generator_config",
    "is_sam2_model",
    "load_sam",
    "load_sam2",
    "register_sam_architecture",
    "sam_model_names",
]
