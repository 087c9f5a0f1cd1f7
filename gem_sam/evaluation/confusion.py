"""Dense segmentation metric: a confusion matrix accumulated over a whole set, mIoU from it.

Labels are [H, W] integer maps with classes 0..K-1 and ``IGNORE`` (255) for pixels left out.
Predictions are [H, W] with classes 0..K-1, or ``NO_PREDICTION`` (-1) for pixels predicted as no
class (counted as a miss of the true class, and as nobody's false positive). The matrix is
[K, K + 1]: rows are true classes, columns predicted classes, the last column "no prediction".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE = 255
NO_PREDICTION = -1


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """[K, K + 1] int64 pixel counts of (true class, predicted class) over pixels not ignored."""
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    valid = labels != IGNORE
    truth = labels[valid].astype(np.int64)
    predicted = predictions[valid].astype(np.int64)
    if truth.size and (truth.min() < 0 or truth.max() >= n_classes):
        raise ValueError(f"label values must lie in 0..{n_classes - 1} or be {IGNORE}, found {truth.max()}")
    predicted = np.where(predicted == NO_PREDICTION, n_classes, predicted)
    counts = np.bincount(truth * (n_classes + 1) + predicted, minlength=n_classes * (n_classes + 1))
    return counts.reshape(n_classes, n_classes + 1)


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """[K] IoU of each class: TP / (TP + FP + FN); NaN for a class neither present nor predicted."""
    n_classes = matrix.shape[0]
    true_positive = np.diag(matrix[:, :n_classes]).astype(np.float64)
    present = matrix.sum(axis=1)  # pixels of each true class, misses included
    predicted = matrix[:, :n_classes].sum(axis=0)
    union = present + predicted - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean IoU over the classes that are present or predicted (NaN classes left out)."""
    ious = per_class_iou(matrix)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Share of the counted pixels whose class was predicted correctly."""
    total = matrix.sum()
    return float(np.trace(matrix[:, : matrix.shape[0]]) / total) if total else float("nan")


def to_sparse(matrix: np.ndarray) -> list[list[int]]:
    """The non-zero entries as [true, predicted, count] (compact per-image records)."""
    rows, cols = np.nonzero(matrix)
    return [[int(r), int(c), int(matrix[r, c])] for r, c in zip(rows, cols, strict=True)]


def from_sparse(entries: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    for row, col, count in entries:
        matrix[row, col] += count
    return matrix
