"""Everything needed to build a ``VideoLabeller``, as plain data that can travel to other processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..labelling.pipeline import AutoLabeller
from ..labelling.spec import LabellerSpec
from ..sam import is_sam2_model, load_sam2
from ..sam.grid_generator import GridMaskGenerator
from .pipeline import NamingRule, VideoConfig, VideoLabeller
from .propagation import Sam2Propagator


@dataclass(frozen=True)
class VideoLabellerSpec:
    """The image labelling settings (``labeller``: models, vocabulary, generator, naming) and the video
    settings. One SAM 2 / 2.1 model, built as a ``SAM2VideoPredictor``, finds the keyframe masks and
    propagates the tracks. ``sam_image_size``: another input side than the model config's (tests)."""

    labeller: LabellerSpec
    video: VideoConfig = field(default_factory=VideoConfig)
    sam_image_size: int | None = None

    def __post_init__(self) -> None:
        if not is_sam2_model(self.labeller.sam_model):
            raise ValueError(
                f"--sam-model {self.labeller.sam_model} is a SAM 1 model; videos are tracked with SAM 2 or 2.1: "
                "choose sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+ or sam2.1_hiera_l (or sam2_hiera_*)"
            )

    def build(self, *, device: str | None = None) -> VideoLabeller:
        spec = self.labeller
        scorer = spec.build_scorer(device=device)
        config = spec.generator_config()
        model = load_sam2(
            model_type=spec.sam_model,
            checkpoint=spec.sam_checkpoint,
            device=scorer.device,
            compile_encoder=config.compile,
            video=True,
            image_size=self.sam_image_size,
        )
        generator = GridMaskGenerator(model, config=config)
        labeller = AutoLabeller(
            scorer=scorer, mask_generator=generator, vocabulary=spec.vocabulary, config=spec.labelling
        )
        return VideoLabeller(labeller=labeller, propagator=Sam2Propagator(model), config=self.video)

    def naming_rule(self, *, device: str | None = None) -> NamingRule:
        """The naming rule, loading only the naming model (for a driver whose workers label)."""
        scorer = self.labeller.build_scorer(device=device or "cpu")
        return NamingRule(self.labeller.vocabulary, scorer.logit_scale, self.labeller.labelling, self.video)

    def settings(self) -> dict[str, Any]:
        return {**self.labeller.settings(), "video": self.video.settings(), "sam_image_size": self.sam_image_size}
