"""Everything needed to build an ``AutoLabeller``, as plain data that can travel to other processes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import open_clip

from ..naming.scorer import GemScorer, ScorerConfig, build_gem_scorer, scorer_config
from ..naming.vocabulary import Vocabulary, as_vocabulary
from ..sam import MaskGeneratorConfig, SamArchitecture, generator_config, register_sam_architecture
from ..sam.config import config_class
from ..sam.grid_generator import GridMaskGenerator, load_generator_model
from .config import LabelConfig
from .pipeline import AutoLabeller


@dataclass(frozen=True)
class LabellerSpec:
    """Models, settings and vocabulary of a labelling run; ``build()`` makes the labeller.

    ``clip_config_paths`` and ``sam_architectures`` register custom model shapes (open_clip JSON
    configs, SAM encoders) in whichever process builds the labeller.
    """

    vocabulary: Vocabulary | tuple[str, ...]  # a list of class names becomes a Vocabulary
    clip_model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    method: str = "gem"
    scorer_options: dict[str, Any] = field(default_factory=dict)  # depth, iterations, templates, short_side
    sam_model: str = "vit_h"
    sam_checkpoint: str | None = None
    generator: MaskGeneratorConfig | None = None  # None: the defaults of sam_model's family
    labelling: LabelConfig = field(default_factory=LabelConfig)
    device: str = "auto"
    clip_config_paths: tuple[str, ...] = ()
    sam_architectures: dict[str, SamArchitecture] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocabulary", as_vocabulary(self.vocabulary))

    def register_models(self) -> None:
        for path in self.clip_config_paths:
            open_clip.add_model_config(path)
        for name, architecture in self.sam_architectures.items():
            register_sam_architecture(name, architecture)

    def build(self, *, device: str | None = None) -> AutoLabeller:
        """The labeller, on ``device`` if given (else the spec's device)."""
        scorer = self.build_scorer(device=device)
        config = self.generator_config()
        model = load_generator_model(
            model_type=self.sam_model, checkpoint=self.sam_checkpoint, device=scorer.device, config=config
        )
        generator = GridMaskGenerator(model, config=config)
        return AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=self.vocabulary, config=self.labelling)

    def build_scorer(self, *, device: str | None = None) -> GemScorer:
        """The naming model (models registered first), on ``device`` if given (else the spec's)."""
        self.register_models()
        return build_gem_scorer(
            model_name=self.clip_model,
            pretrained=self.pretrained,
            method=self.method,
            device=device or self.device,
            **self.scorer_options,
        )

    def scorer_config(self) -> ScorerConfig:
        """The scorer's configuration (templates, dense path, input size), without loading weights."""
        return scorer_config(
            method=self.method, **{key: value for key, value in self.scorer_options.items() if value is not None}
        )

    def generator_config(self) -> MaskGeneratorConfig:
        """The generator's settings: ``generator``, or the defaults of ``sam_model``'s family. A config of
        the other family is refused."""
        if self.generator is None:
            return generator_config(self.sam_model)
        expected = config_class(self.sam_model)
        if type(self.generator) is not expected:
            raise ValueError(
                f"sam_model {self.sam_model!r} takes a {expected.__name__} ({expected.family} settings), "
                f"got a {type(self.generator).__name__}"
            )
        return self.generator

    def settings(self) -> dict[str, Any]:
        """What makes two runs' results comparable (stored with the results to refuse mixing)."""
        return {
            **self.vocabulary.settings(),
            "clip_model": self.clip_model,
            "pretrained": self.pretrained,
            "method": self.method,
            "scorer_options": {key: value for key, value in self.scorer_options.items() if value is not None},
            "sam_model": self.sam_model,
            "sam_checkpoint": self.sam_checkpoint,
            "mask_generator": dataclasses.asdict(self.generator_config()),
            "labelling": self.labelling.settings(),
        }
