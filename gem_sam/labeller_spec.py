"""Everything needed to build an ``AutoLabeller``, as plain data that can travel to other processes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import open_clip

from .labelling import LabelConfig
from .mask_generator import MaskGeneratorConfig, build_mask_generator
from .pipeline import AutoLabeller
from .sam_model import SamArchitecture, register_sam_architecture
from .scorer import build_gem_scorer


@dataclass(frozen=True)
class LabellerSpec:
    """Models, settings and vocabulary of a labelling run; ``build()`` makes the labeller.

    ``clip_config_paths`` and ``sam_architectures`` register custom model shapes (open_clip JSON
    configs, SAM encoders) in whichever process builds the labeller.
    """

    vocabulary: tuple[str, ...]
    clip_model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    method: str = "gem"
    scorer_options: dict[str, Any] = field(default_factory=dict)  # depth, iterations, templates, short_side
    sam_model: str = "vit_h"
    sam_checkpoint: str | None = None
    generator: MaskGeneratorConfig = field(default_factory=MaskGeneratorConfig)
    labelling: LabelConfig = field(default_factory=LabelConfig)
    device: str = "auto"
    clip_config_paths: tuple[str, ...] = ()
    sam_architectures: dict[str, SamArchitecture] = field(default_factory=dict)

    def register_models(self) -> None:
        for path in self.clip_config_paths:
            open_clip.add_model_config(path)
        for name, architecture in self.sam_architectures.items():
            register_sam_architecture(name, architecture)

    def build(self, *, device: str | None = None) -> AutoLabeller:
        """The labeller, on ``device`` if given (else the spec's device)."""
        self.register_models()
        scorer = build_gem_scorer(
            model_name=self.clip_model,
            pretrained=self.pretrained,
            method=self.method,
            device=device or self.device,
            **self.scorer_options,
        )
        generator = build_mask_generator(
            model_type=self.sam_model,
            checkpoint=self.sam_checkpoint,
            device=scorer.device,
            **dataclasses.asdict(self.generator),
        )
        return AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=self.vocabulary, config=self.labelling)

    def settings(self) -> dict[str, Any]:
        """What makes two runs' results comparable (stored with the results to refuse mixing)."""
        return {
            "vocabulary": list(self.vocabulary),
            "clip_model": self.clip_model,
            "pretrained": self.pretrained,
            "method": self.method,
            "scorer_options": {key: value for key, value in self.scorer_options.items() if value is not None},
            "sam_model": self.sam_model,
            "sam_checkpoint": self.sam_checkpoint,
            "mask_generator": dataclasses.asdict(self.generator),
            "labelling": self.labelling.settings(),
        }
