"""Point-label IoU (p-mIoU) as in the GEM paper's OpenImages V7 evaluation.

Per (image, class): TP = yes-points inside the predicted mask, FN = yes-points outside, FP =
no-points inside; unsure points are ignored. ``p_miou`` accumulates TP, FP and FN per class over the
whole dataset and averages the per-class IoU TP / (TP + FP + FN) over classes (the standard mIoU
convention); ``p_miou_per_pair`` averages the IoU of each (image, class) pair.

Normalised point coordinates map to pixels by ``col = min(floor(x * W), W - 1)`` and
``row = min(floor(y * H), H - 1)``: pixel j covers [j / W, (j + 1) / W), and x = 1 falls in the
last pixel.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


def points_to_pixels(x: np.ndarray, y: np.ndarray, *, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (x, y) in [0, 1] -> integer (row, col) pixel indices of an image of size (H, W)."""
    height, width = size_hw
    cols = np.minimum(np.floor(np.asarray(x, dtype=np.float64) * width).astype(np.int64), width - 1)
    rows = np.minimum(np.floor(np.asarray(y, dtype=np.float64) * height).astype(np.int64), height - 1)
    return rows, cols


def count_points(inside: np.ndarray, answer: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) from whether each point is inside the predicted mask and its answer (1/0/-1)."""
    inside = np.asarray(inside, dtype=bool)
    answer = np.asarray(answer)
    true_positive = int(np.sum(inside & (answer == 1)))
    false_positive = int(np.sum(inside & (answer == 0)))
    false_negative = int(np.sum(~inside & (answer == 1)))
    return true_positive, false_positive, false_negative


def iou(true_positive: int, false_positive: int, false_negative: int) -> float:
    """TP / (TP + FP + FN); 0 when all three are 0 (does not happen for an evaluated class)."""
    total = true_positive + false_positive + false_negative
    return true_positive / total if total else 0.0


@dataclass
class PointIoU:
    """Accumulates point counts over images; reads both averages at any time."""

    per_class: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    pair_ious: list[float] = field(default_factory=list)

    def add(self, class_id: str, counts: tuple[int, int, int]) -> None:
        totals = self.per_class[class_id]
        for index, value in enumerate(counts):
            totals[index] += value
        self.pair_ious.append(iou(*counts))

    @property
    def p_miou(self) -> float:
        if not self.per_class:
            return 0.0
        return float(np.mean([iou(*counts) for counts in self.per_class.values()]))

    @property
    def p_miou_per_pair(self) -> float:
        return float(np.mean(self.pair_ious)) if self.pair_ious else 0.0

    @property
    def n_classes(self) -> int:
        return len(self.per_class)
