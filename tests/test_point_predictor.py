"""gem-sam refinement rules against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from gem_sam.point_predictor import SamRefinement, refine_with_masks

# Two masks, one class, three points: point 0 in both masks, point 1 in mask 1 only, point 2 in none.
MEANS = np.array([[0.9], [0.3]])  # [M, C]
COVERING = np.array([[True, False, False], [True, True, False]])  # [M, P]
AREAS = np.array([500, 20])  # mask 1 is the smaller one
MAP = np.array([[0.1, 0.2, 0.7]])  # [C, P]


@pytest.mark.parametrize(
    "overlap,uncovered,expected",
    [
        ("max", "map", [0.9, 0.3, 0.7]),
        ("max", "zero", [0.9, 0.3, 0.0]),
        ("smallest", "map", [0.3, 0.3, 0.7]),
        ("smallest", "zero", [0.3, 0.3, 0.0]),
    ],
)
def test_rules(overlap: str, uncovered: str, expected: list[float]) -> None:
    values = refine_with_masks(MEANS, COVERING, AREAS, MAP, SamRefinement(overlap=overlap, uncovered=uncovered))
    np.testing.assert_allclose(values[0], expected)


def test_no_masks_falls_back_everywhere() -> None:
    values = refine_with_masks(np.zeros((0, 1)), np.zeros((0, 3), bool), np.zeros(0), MAP, SamRefinement())
    np.testing.assert_allclose(values, MAP)


def test_bad_rules() -> None:
    with pytest.raises(ValueError, match="overlap rule 'min'"):
        SamRefinement(overlap="min")
    with pytest.raises(ValueError, match="uncovered rule 'nan'"):
        SamRefinement(uncovered="nan")
