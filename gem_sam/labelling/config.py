"""How a labelling run names and filters masks: the class-probability floor and the dataset quality
controls (see ``quality``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .quality import QualityControls


@dataclass(frozen=True)
class LabelConfig:
    """How masks are named and filtered."""

    min_score: float = 0.0  # drop masks whose class probability is below this (0 keeps all)
    quality: QualityControls = field(default_factory=QualityControls)  # dataset controls, off by default

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score={self.min_score} must lie in [0, 1]")

    def settings(self) -> dict[str, float | int]:
        """The settings in effect: ``min_score`` and the quality controls that are on."""
        on = {name: value for name, value in vars(self.quality).items() if value is not None}
        return {"min_score": self.min_score, **on}
