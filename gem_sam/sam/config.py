"""Settings of the grid-point mask generator, per model family, with each family's own defaults.

``MaskGeneratorConfig`` has the names and defaults of ``segment_anything.SamAutomaticMaskGenerator``
(SAM 1); ``Sam2GeneratorConfig`` those of ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator``
(``pred_iou_thresh`` 0.8, plus ``mask_threshold``, ``use_m2m`` and ``multimask_output``). Each field's
``help`` metadata is also the help of its command-line flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from .sam2_model import SAM2_VARIANTS

SAM2_ONLY_SETTINGS = ("mask_threshold", "use_m2m", "multimask_output")


@dataclass(frozen=True)
class MaskGeneratorConfig:
    """SAM 1 generator settings; names and defaults of ``SamAutomaticMaskGenerator``."""

    points_per_side: int = field(
        default=32, metadata={"help": "grid points along each image side (points_per_side**2 prompts)"}
    )
    points_per_batch: int = field(
        default=64, metadata={"help": "prompts decoded together (memory vs speed; masks do not change)"}
    )
    pred_iou_thresh: float = field(default=0.88, metadata={"help": "keep masks whose predicted IoU is above this"})
    stability_score_thresh: float = field(
        default=0.95, metadata={"help": "keep masks whose stability score is at least this"}
    )
    stability_score_offset: float = field(default=1.0, metadata={"help": "logit offset for the stability score"})
    box_nms_thresh: float = field(default=0.7, metadata={"help": "box IoU for NMS within a crop"})
    crop_n_layers: int = field(
        default=0, metadata={"help": "extra layers of image crops (layer i has (2**i)**2 crops)"}
    )
    crop_nms_thresh: float = field(default=0.7, metadata={"help": "box IoU for NMS between crops"})
    crop_overlap_ratio: float = field(
        default=512 / 1500, metadata={"help": "overlap of first-layer crops, fraction of the short side"}
    )
    crop_n_points_downscale_factor: int = field(
        default=1, metadata={"help": "points per side divided by this per crop layer"}
    )
    min_mask_region_area: int = field(
        default=0, metadata={"help": "remove holes and islands smaller than this (pixels); 0: off"}
    )
    precision: str = field(default="fp32", metadata={"help": "fp32 | bf16 | fp16 autocast for the SAM networks (GPU)"})
    compile: bool = field(
        default=False,
        metadata={
            "help": "compile the image encoder with torch.compile (the first image is slower; masks do not change)"
        },
    )

    family = "SAM 1"
    use_m2m = False  # SAM 1 has no mask-to-mask refinement (a field of Sam2GeneratorConfig)

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        require(self.points_per_side >= 1, f"points_per_side={self.points_per_side} must be at least 1")
        require(self.points_per_batch >= 1, f"points_per_batch={self.points_per_batch} must be at least 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"{name}={value} must lie in [0, 1]")
        require(self.stability_score_offset > 0, f"stability_score_offset={self.stability_score_offset} must be > 0")
        require(self.crop_n_layers >= 0, f"crop_n_layers={self.crop_n_layers} must be 0 or more")
        require(
            0.0 <= self.crop_overlap_ratio < 1.0, f"crop_overlap_ratio={self.crop_overlap_ratio} must lie in [0, 1)"
        )
        require(
            self.crop_n_points_downscale_factor >= 1,
            f"crop_n_points_downscale_factor={self.crop_n_points_downscale_factor} must be at least 1",
        )
        require(self.min_mask_region_area >= 0, f"min_mask_region_area={self.min_mask_region_area} must be 0 or more")
        require(
            self.precision in ("fp32", "bf16", "fp16"),
            f"precision={self.precision!r} is not supported; choose fp32, bf16 or fp16",
        )

    def reference_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the family's reference generator with the same settings."""
        kwargs = asdict(self)
        del kwargs["precision"], kwargs["compile"]
        return kwargs


@dataclass(frozen=True)
class Sam2GeneratorConfig(MaskGeneratorConfig):
    """SAM 2 generator settings; names and defaults of ``SAM2AutomaticMaskGenerator``."""

    pred_iou_thresh: float = field(default=0.8, metadata={"help": "keep masks whose predicted IoU is above this"})
    mask_threshold: float = field(default=0.0, metadata={"help": "SAM 2: logit threshold that binarises the masks"})
    use_m2m: bool = field(
        default=False,
        metadata={"help": "SAM 2: refine each mask once more, prompted with its own low-resolution logits"},
    )
    multimask_output: bool = field(
        default=True,
        metadata={
            "help": "SAM 2: three masks per point; --no-multimask-output gives one (the single-mask output, or "
            "the best of the three where it is unstable)"
        },
    )

    family = "SAM 2"


def is_sam2_model(model_type: str) -> bool:
    """Whether ``model_type`` names a SAM 2 / 2.1 model (the others are SAM 1)."""
    return model_type in SAM2_VARIANTS


def config_class(model_type: str) -> type[MaskGeneratorConfig]:
    return Sam2GeneratorConfig if is_sam2_model(model_type) else MaskGeneratorConfig


def generator_config(model_type: str, **settings: Any) -> MaskGeneratorConfig:
    """The generator settings for ``model_type``'s family: the family's defaults, then ``settings``.

    Unknown names are a TypeError that lists the valid ones; a SAM 2 setting with a SAM 1 model is a
    ValueError that says so.
    """
    cls = config_class(model_type)
    known = [item.name for item in dataclasses.fields(cls)]
    misplaced = sorted(set(settings) & set(SAM2_ONLY_SETTINGS) - set(known))
    if misplaced:
        raise ValueError(
            f"{', '.join(misplaced)}: SAM 2 setting(s), but {model_type} is a SAM 1 model; "
            "choose a sam2.1_hiera_* or sam2_hiera_* model, or leave them out"
        )
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise TypeError(f"unknown mask generator setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    return cls(**settings)
