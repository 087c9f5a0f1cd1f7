"""Dataset quality controls on named masks: absolute similarity floor, class-aware duplicate
suppression, dropping parts, and a cap per image.

All are off by default (the paper's behaviour) and exact: overlaps are computed on the full-resolution
RLE masks with pycocotools. Applied in this order to one image's masks:

1. ``min_similarity``: drop a mask whose best pooled cosine similarity (over the vocabulary) is below
   the threshold, so a mask that matches no entry is not forced into a class.
2. ``dedupe_iou``: going from the highest score down, drop a mask whose IoU with an already kept mask
   of the same class is at least the threshold (ties in score keep the earlier mask); at 1.0 exact
   duplicates go.
3. ``drop_parts``: drop a mask when a strictly larger kept mask of the same class covers at least this
   fraction of its pixels (``|A & B| / |A|``), e.g. a shirt inside its person.
4. ``max_masks_per_image``: keep the highest-scoring masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycocotools import mask as mask_utils

from ..mask_ops import compressed_rle


@dataclass(frozen=True)
class QualityControls:
    """Thresholds of the quality controls; None turns a control off."""

    min_similarity: float | None = None  # drop masks whose best cosine similarity is below this
    dedupe_iou: float | None = None  # same-class masks with a mask IoU of at least this: keep the higher score
    drop_parts: float | None = None  # drop a mask covered beyond this fraction by a larger same-class mask
    max_masks_per_image: int | None = None  # keep at most this many masks per image, highest scores first

    def __post_init__(self) -> None:
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity={self.min_similarity} must lie in [-1, 1] (a cosine similarity)")
        for name in ("dedupe_iou", "drop_parts"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name}={value} must lie in (0, 1]")
        if self.max_masks_per_image is not None and self.max_masks_per_image < 1:
            raise ValueError(f"max_masks_per_image={self.max_masks_per_image} must be at least 1")

    @property
    def active(self) -> bool:
        return any(value is not None for value in vars(self).values())


def select_masks(
    *,
    classes: Sequence[int],
    scores: Sequence[float],
    segmentations: Sequence[dict[str, Any]],
    similarities: Sequence[float] | None,
    controls: QualityControls,
) -> list[int]:
    """Indices (ascending) of one image's masks that pass ``controls``.

    classes: [M] class of each mask; scores: [M]; segmentations: [M] COCO RLEs; similarities: [M]
    best pooled cosine similarity (needed only for ``min_similarity``).
    """
    candidates = list(range(len(classes)))
    if controls.min_similarity is not None:
        if similarities is None:
            raise ValueError("min_similarity needs each mask's similarity")
        candidates = [i for i in candidates if similarities[i] >= controls.min_similarity]
    rles = [compressed_rle(segmentation) for segmentation in segmentations]
    by_score = sorted(candidates, key=lambda i: (-scores[i], i))

    if controls.dedupe_iou is not None:
        kept: list[int] = []
        for i in by_score:
            same = [j for j in kept if classes[j] == classes[i]]
            if (
                same
                and (mask_utils.iou([rles[i]], [rles[j] for j in same], [0] * len(same)) >= controls.dedupe_iou).any()
            ):
                continue
            kept.append(i)
        by_score = kept

    if controls.drop_parts is not None:
        areas = {i: float(mask_utils.area(rles[i])) for i in by_score}
        parts = set()
        for i in by_score:
            larger = [j for j in by_score if classes[j] == classes[i] and areas[j] > areas[i]]
            # with the larger masks as "crowd" ground truth, pycocotools' IoU is |A & B| / |A|
            if (
                larger
                and (
                    mask_utils.iou([rles[i]], [rles[j] for j in larger], [1] * len(larger)) >= controls.drop_parts
                ).any()
            ):
                parts.add(i)
        by_score = [i for i in by_score if i not in parts]

    if controls.max_masks_per_image is not None:
        by_score = by_score[: controls.max_masks_per_image]
    return sorted(by_score)
