"""Comparing two lists of mask records (ours and the reference generator's) for parity.

The claim is identity: the same masks, pixel for pixel (IoU 1.0), the same boxes and prompt points.
Scores may differ by float rounding only (``SCORE_ROUNDING``): the two decoders sum in another order,
so predicted IoUs and mask logits differ by about 1e-6, and a stability score, a ratio of pixel
counts, moves by one pixel over the mask's area when a logit lies within that rounding of a threshold.
For the same reason a mask pixel whose logit lies within that rounding of 0 can flip; ``holds`` allows
no such pixel unless a caller that has measured one says so (``pixel_tolerance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..mask_ops import decode_rle

SCORE_ROUNDING = 1e-4  # largest |difference| of predicted_iou or stability_score that counts as equal


@dataclass(frozen=True)
class MaskParity:
    """How closely two lists of mask records agree."""

    count_a: int
    count_b: int
    worst_iou: float  # lowest mask IoU over the one-to-one matching
    max_score_difference: float  # largest |difference| of predicted_iou or stability_score
    max_box_difference: float  # largest |difference| of a bbox coordinate, pixels
    max_point_difference: float  # largest |difference| of a prompt point coordinate, pixels
    max_pixel_difference: int = 0  # most pixels in which a matched pair differs

    def holds(self, *, score_tolerance: float = SCORE_ROUNDING, pixel_tolerance: int = 0) -> bool:
        """Same count, every matched mask identical (or differing in at most ``pixel_tolerance`` pixels)
        with the same box and point, scores within ``score_tolerance``."""
        return (
            self.count_a == self.count_b
            and self.max_pixel_difference <= pixel_tolerance  # 0: every matched mask identical, IoU 1.0
            and self.max_box_difference == 0.0
            and self.max_point_difference == 0.0
            and self.max_score_difference <= score_tolerance
        )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _largest_difference(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")


def compare_mask_records(
    records_a: list[dict[str, Any]], records_b: list[dict[str, Any]], *, allow_empty: bool = False
) -> MaskParity:
    """Match each mask of ``records_a`` to its best-IoU unmatched mask of ``records_b`` (the reference)
    and report the worst IoU and the largest score, box and point differences of the matched pairs.

    An empty reference is refused (two empty lists agree whatever the code does) unless ``allow_empty``.
    """
    if not records_b and not allow_empty:
        raise ValueError(
            "the reference has no masks, and an empty list equals an empty list: choose settings (or shift the "
            "random weights) so that masks survive"
        )
    masks_b = [decode_rle(record["segmentation"]) for record in records_b]
    unmatched = list(range(len(records_b)))
    worst_iou = 1.0 if len(records_a) == len(records_b) else 0.0
    score_difference = box_difference = point_difference = 0.0
    pixel_difference = 0
    for record in records_a:
        if not unmatched:
            break
        mask = decode_rle(record["segmentation"])
        ious = [_iou(mask, masks_b[index]) for index in unmatched]
        best = int(np.argmax(ious))
        index = unmatched.pop(best)
        match = records_b[index]
        worst_iou = min(worst_iou, ious[best])
        pixel_difference = max(pixel_difference, int(np.logical_xor(mask, masks_b[index]).sum()))
        for key in ("predicted_iou", "stability_score"):
            score_difference = max(score_difference, abs(record[key] - match[key]))
        box_difference = max(box_difference, _largest_difference(record["bbox"], match["bbox"]))
        if "point_coords" in record or "point_coords" in match:
            point_difference = max(
                point_difference, _largest_difference(record.get("point_coords"), match.get("point_coords"))
            )
    return MaskParity(
        len(records_a), len(records_b), worst_iou, score_difference, box_difference, point_difference, pixel_difference
    )
