"""The point-label metric against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from gem_sam.evaluation.point_metric import PointIoU, count_points, iou, points_to_pixels


@pytest.mark.parametrize(
    "x,y,size_hw,expected_row,expected_col",
    [
        (0.0, 0.0, (4, 8), 0, 0),
        (1.0, 1.0, (4, 8), 3, 7),  # x = 1 falls in the last pixel
        (0.5, 0.5, (4, 8), 2, 4),
        (0.1249, 0.2499, (4, 8), 0, 0),
        (0.125, 0.25, (4, 8), 1, 1),
        (0.999999, 0.0, (1, 1), 0, 0),
    ],
)
def test_points_to_pixels(x, y, size_hw, expected_row, expected_col) -> None:
    rows, cols = points_to_pixels(np.array([x]), np.array([y]), size_hw=size_hw)
    assert (rows[0], cols[0]) == (expected_row, expected_col)


@pytest.mark.parametrize(
    "inside,answer,expected",
    [
        ([True, True, False, False], [1, 0, 1, 0], (1, 1, 1)),
        ([True, True, True], [1, 1, -1], (2, 0, 0)),  # unsure points are ignored
        ([False, False], [1, 1], (0, 0, 2)),
        ([True], [0], (0, 1, 0)),
        ([], [], (0, 0, 0)),
    ],
)
def test_count_points(inside, answer, expected) -> None:
    assert count_points(np.array(inside, dtype=bool), np.array(answer)) == expected


def test_dataset_and_pair_averages_by_hand() -> None:
    metric = PointIoU()
    metric.add("/m/cat", (1, 0, 1))  # image 1: IoU 1/2
    metric.add("/m/dog", (2, 2, 0))  # image 1: IoU 2/4
    metric.add("/m/cat", (3, 0, 0))  # image 2: IoU 1
    # per class: cat (4, 0, 1) -> 0.8; dog 0.5; mean 0.65. Per pair: (0.5 + 0.5 + 1) / 3.
    assert metric.p_miou == pytest.approx(0.65)
    assert metric.p_miou_per_pair == pytest.approx(2 / 3)
    assert metric.n_classes == 2
    assert iou(0, 0, 0) == 0.0
