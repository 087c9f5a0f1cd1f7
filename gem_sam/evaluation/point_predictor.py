"""Per-class predicted masks, read at labelled points, for the methods of the paper's Table 3.

Every method starts from a similarity map per class, bilinearly upsampled to the image and min-max
scaled per class to [0, 1]; a point is inside the predicted mask when its value is at least 0.5.

* ``gem``, ``clip``, ``maskclip``, ``clipsurgery``: the scaled map of that dense path itself.
* ``gem-sam``: SAM grid masks and the GEM map, combined by one of two rules (``SamRefinement.rule``):

  - ``label`` (default), the literal reading of "GEM labels SAM masks": each mask takes the class,
    among the image's evaluated classes, whose similarity inside it is highest (as the labelling
    pipeline names masks); a class's prediction is the union of its masks, and a pixel that no
    mask covers is predicted for no class.
  - ``mean``: each mask takes the mean of the scaled map inside it (the labelling pipeline's exact
    pooling). A pixel covered by several masks takes the largest of their means
    (``overlap="max"``) or the mean of the smallest covering mask (``overlap="smallest"``); a pixel
    that no mask covers keeps the scaled map's value (``uncovered="map"``) or gets 0
    (``uncovered="zero"``). The refined values are not scaled again, so averaging inside large
    masks can keep a whole class below 0.5.

Device handling: similarity maps, their minima and spans and the pooled values stay on the
scorer's device; only the per-point results ([C, P] or [M, ...]) are copied to the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..mask_ops import decoded_mask_chunks, pool_in_masks
from ..naming.scorer import GemScorer
from ..sam import GridMaskGenerator
from .point_metric import points_to_pixels

EVAL_METHODS: tuple[str, ...] = ("gem", "gem-sam", "clip", "maskclip", "clipsurgery")
SAM_RULES: tuple[str, ...] = ("label", "mean")
OVERLAP_RULES: tuple[str, ...] = ("max", "smallest")
UNCOVERED_RULES: tuple[str, ...] = ("map", "zero")
THRESHOLD = 0.5


@dataclass(frozen=True)
class SamRefinement:
    """How ``gem-sam`` combines SAM masks with the GEM map (see the module docstring)."""

    rule: str = "label"  # label | mean
    overlap: str = "max"  # mean rule: max | smallest
    uncovered: str = "map"  # mean rule: map | zero

    def __post_init__(self) -> None:
        if self.rule not in SAM_RULES:
            raise ValueError(f"gem-sam rule {self.rule!r} is not one of {', '.join(SAM_RULES)}")
        if self.overlap not in OVERLAP_RULES:
            raise ValueError(f"overlap rule {self.overlap!r} is not one of {', '.join(OVERLAP_RULES)}")
        if self.uncovered not in UNCOVERED_RULES:
            raise ValueError(f"uncovered rule {self.uncovered!r} is not one of {', '.join(UNCOVERED_RULES)}")

    def settings(self) -> dict[str, Any]:
        """The settings that take effect (the overlap and uncovered rules only for ``mean``)."""
        if self.rule == "label":
            return {"rule": self.rule}
        return {"rule": self.rule, "overlap": self.overlap, "uncovered": self.uncovered}


def refine_with_masks(
    mask_means: np.ndarray, covering: np.ndarray, areas: np.ndarray, map_values: np.ndarray, rule: SamRefinement
) -> np.ndarray:
    """Per-point values [C, P] of the ``mean`` rule.

    mask_means: [M, C] mean scaled map inside each mask; covering: [M, P] bool, mask m covers point p;
    areas: [M] mask pixel counts; map_values: [C, P] scaled map at the points.
    """
    covered = covering.any(axis=0)  # [P]
    if rule.overlap == "max":
        candidates = np.where(covering[:, None, :], mask_means[:, :, None], -np.inf)  # [M, C, P]
        refined = candidates.max(axis=0) if len(mask_means) else np.full(map_values.shape, -np.inf)
    else:
        sized = np.where(covering, areas[:, None], np.inf)  # [M, P]
        smallest = sized.argmin(axis=0) if len(mask_means) else np.zeros(covering.shape[1], dtype=int)
        refined = mask_means[smallest].T if len(mask_means) else np.zeros_like(map_values)  # [C, P]
    fallback = map_values if rule.uncovered == "map" else np.zeros_like(map_values)
    return np.where(covered[None, :], refined, fallback)


def union_of_labelled_masks(mask_classes: np.ndarray, covering: np.ndarray, n_classes: int) -> np.ndarray:
    """The ``label`` rule: [C, P] bool, point p lies in a mask labelled c.

    mask_classes: [M] class index of each mask; covering: [M, P] bool, mask m covers point p.
    """
    one_hot = mask_classes[:, None] == np.arange(n_classes)[None, :]  # [M, C]
    return (one_hot.T.astype(np.int64) @ covering.astype(np.int64)) > 0  # [C, P]


def mask_classes_and_means(
    similarity: torch.Tensor, masks: torch.Tensor, low: torch.Tensor, span: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask, the class of highest mean raw similarity ([M] int64, as the labeller names masks)
    and the mean of each min-max scaled class map inside it ([M, C]), both on the maps' device.

    similarity: [C, h, w] raw map; masks: [M, H, W] bool (any device); low, span: [C] minimum and
    span of the upsampled map, on the maps' device. Pooling is linear, so the mean of the scaled map
    is the scaled mean of the raw map.
    """
    pooled = pool_in_masks(similarity, masks)  # [M, C]
    return pooled.argmax(dim=1), (pooled - low) / span


class PointPredictor:
    """Decides, per class, which labelled points of an image fall inside the predicted mask."""

    def __init__(
        self,
        *,
        method: str,
        scorer: GemScorer,
        mask_generator: GridMaskGenerator | None = None,
        refinement: SamRefinement = SamRefinement(),
    ) -> None:
        if method not in EVAL_METHODS:
            raise ValueError(f"method {method!r} is not one of {', '.join(EVAL_METHODS)}")
        if method == "gem-sam" and mask_generator is None:
            raise ValueError("method gem-sam needs a SAM mask generator")
        self.method = method
        self.scorer = scorer
        self.mask_generator = mask_generator
        self.refinement = refinement
        self._text: dict[str, torch.Tensor] = {}  # class name -> embedding, computed once per name

    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """[C, E] embeddings; each class name is encoded once per run."""
        new = [name for name in dict.fromkeys(class_names) if name not in self._text]
        if new:
            self._text.update(zip(new, self.scorer.encode_text(new), strict=True))
        return torch.stack([self._text[name] for name in class_names])

    @torch.no_grad()
    def inside(self, image_rgb: np.ndarray, class_names: Sequence[str], x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """[C, P] bool: point p (normalised x, y) is inside the predicted mask of class c."""
        size_hw = image_rgb.shape[:2]
        rows, cols = points_to_pixels(x, y, size_hw=size_hw)
        rows_t, cols_t = torch.from_numpy(rows), torch.from_numpy(cols)
        similarity = self.scorer.patch_similarity(self.scorer.preprocess(image_rgb), self.text_embeddings(class_names))
        upsampled = F.interpolate(similarity, size=size_hw, mode="bilinear", align_corners=False)[0]  # [C, H, W]
        low = upsampled.flatten(1).min(dim=1).values  # [C]
        span = (upsampled.flatten(1).max(dim=1).values - low).clamp(min=1e-8)  # [C]
        at_points = upsampled[:, rows_t.to(upsampled.device), cols_t.to(upsampled.device)]  # [C, P]
        map_values = ((at_points - low[:, None]) / span[:, None]).cpu().numpy()
        if self.method != "gem-sam":
            return map_values >= THRESHOLD

        records = self.mask_generator.generate(image_rgb)
        classes, means = [np.zeros(0, dtype=np.int64)], [np.zeros((0, len(class_names)))]
        covering, areas = [np.zeros((0, len(x)), bool)], [np.zeros(0)]
        for chunk, masks in decoded_mask_chunks(records, size_hw=size_hw):
            chunk_classes, chunk_means = mask_classes_and_means(similarity[0], masks, low, span)
            classes.append(chunk_classes.cpu().numpy())  # [m]
            means.append(chunk_means.cpu().numpy())  # [m, C]
            covering.append(masks[:, rows_t, cols_t].numpy())  # [m, P]
            areas.append(np.array([record["area"] for record in chunk]))
        covering_all = np.concatenate(covering)
        if self.refinement.rule == "label":
            return union_of_labelled_masks(np.concatenate(classes), covering_all, len(class_names))
        values = refine_with_masks(
            np.concatenate(means), covering_all, np.concatenate(areas), map_values, self.refinement
        )
        return values >= THRESHOLD
