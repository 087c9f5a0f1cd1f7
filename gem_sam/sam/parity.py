"""Comparing two lists of mask records (ours and segment-anything's) for parity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..mask_ops import decode_rle


@dataclass(frozen=True)
class MaskParity:
    """How closely two lists of mask records agree."""

    count_a: int
    count_b: int
    worst_iou: float  # lowest mask IoU over the one-to-one matching (1.0 for two empty lists)
    max_score_difference: float  # largest |difference| of predicted_iou or stability_score
    max_box_difference: float  # largest |difference| of a bbox coordinate, pixels

    def holds(self, *, min_iou: float = 0.99, score_tolerance: float = 1e-4, box_tolerance: float = 1.0) -> bool:
        """Same count, matched masks with IoU >= min_iou, scores and boxes within tolerance."""
        return (
            self.count_a == self.count_b
            and self.worst_iou >= min_iou
            and self.max_score_difference <= score_tolerance
            and self.max_box_difference <= box_tolerance
        )


def compare_mask_records(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> MaskParity:
    """Match each mask of ``records_a`` to its best-IoU unmatched mask of ``records_b`` (greedy) and
    report the worst IoU and the largest score and box differences of the matched pairs."""
    masks_b = [decode_rle(record["segmentation"]) for record in records_b]
    unmatched = list(range(len(records_b)))
    worst_iou, score_difference, box_difference = 1.0, 0.0, 0.0
    for record in records_a:
        if not unmatched:
            worst_iou = 0.0
            break
        mask = decode_rle(record["segmentation"])
        ious = []
        for index in unmatched:
            union = np.logical_or(mask, masks_b[index]).sum()
            ious.append(float(np.logical_and(mask, masks_b[index]).sum() / union) if union else 1.0)
        best = int(np.argmax(ious))
        match = records_b[unmatched.pop(best)]
        worst_iou = min(worst_iou, ious[best])
        for key in ("predicted_iou", "stability_score"):
            score_difference = max(score_difference, abs(record[key] - match[key]))
        box_difference = max(
            box_difference, float(np.abs(np.asarray(record["bbox"]) - np.asarray(match["bbox"])).max())
        )
    if len(records_a) < len(records_b):
        worst_iou = 0.0 if records_a or records_b else 1.0
    return MaskParity(len(records_a), len(records_b), worst_iou, score_difference, box_difference)
