"""Dataset quality controls on hand-made masks (expected results worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from gem_sam.labelling.quality import QualityControls, select_masks
from gem_sam.mask_ops import encode_rle


def box(top: int, left: int, bottom: int, right: int, size: tuple[int, int] = (20, 20)) -> dict:
    mask = np.zeros(size, dtype=bool)
    mask[top:bottom, left:right] = True
    return encode_rle(mask)


# person 10x10 (100 px); a near-duplicate shifted by one column (IoU 90/110 = 0.818); a shirt 4x10 inside the
# person; a dog over the same pixels as the person; a small mask of the person class elsewhere.
PERSON = box(0, 0, 10, 10)
DUPLICATE = box(0, 1, 10, 11)
SHIRT = box(3, 0, 7, 10)
DOG = box(0, 0, 10, 10)
ELSEWHERE = box(15, 15, 18, 18)
MASKS = [PERSON, DUPLICATE, SHIRT, DOG, ELSEWHERE]
CLASSES = [0, 0, 0, 1, 0]
SCORES = [0.6, 0.9, 0.5, 0.4, 0.7]
SIMILARITIES = [0.30, 0.28, 0.25, 0.12, 0.22]


def select(**controls) -> list[int]:
    return select_masks(
        classes=CLASSES,
        scores=SCORES,
        segmentations=MASKS,
        similarities=SIMILARITIES,
        controls=QualityControls(**controls),
    )


@pytest.mark.parametrize(
    "controls,expected",
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"min_similarity": 0.2}, [0, 1, 2, 4]),  # the dog (0.12) matches no class well enough
        ({"min_similarity": 0.12}, [0, 1, 2, 3, 4]),  # the threshold itself passes
        # duplicate (0.9) kept first; person IoU 0.818 > 0.8 -> dropped; shirt IoU with duplicate 36/104
        ({"dedupe_iou": 0.8}, [1, 2, 3, 4]),
        ({"dedupe_iou": 0.85}, [0, 1, 2, 3, 4]),  # 0.818 is not above 0.85
        # the dog has the person's pixels but another class: never a duplicate of it
        ({"dedupe_iou": 0.5}, [1, 2, 3, 4]),
        # shirt: 40/40 inside the person, 36/40 = 0.9 inside the duplicate
        ({"drop_parts": 0.95}, [0, 1, 3, 4]),
        ({"drop_parts": 1.0}, [0, 1, 3, 4]),
        # the person is 90% inside the duplicate, but both have 100 px: only strictly larger masks count
        ({"drop_parts": 0.5}, [0, 1, 3, 4]),
        ({"max_masks_per_image": 2}, [1, 4]),  # scores 0.9 and 0.7
        # all together: similarity drops the dog, dedupe the person, parts the shirt (0.9 inside the duplicate)
        ({"min_similarity": 0.2, "dedupe_iou": 0.8, "drop_parts": 0.9, "max_masks_per_image": 5}, [1, 4]),
    ],
)
def test_controls(controls: dict, expected: list[int]) -> None:
    assert select(**controls) == expected


def test_equal_scores_keep_the_earlier_mask() -> None:
    kept = select_masks(
        classes=[0, 0],
        scores=[0.5, 0.5],
        segmentations=[PERSON, PERSON],
        similarities=None,
        controls=QualityControls(dedupe_iou=0.9),
    )
    assert kept == [0]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"min_similarity": 1.5}, "min_similarity=1.5 must lie in \\[-1, 1\\]"),
        ({"dedupe_iou": 0.0}, "dedupe_iou=0.0 must lie in \\(0, 1\\]"),
        ({"drop_parts": 1.2}, "drop_parts=1.2"),
        ({"max_masks_per_image": 0}, "max_masks_per_image=0 must be at least 1"),
    ],
)
def test_bad_thresholds(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QualityControls(**kwargs)


def test_min_similarity_needs_similarities() -> None:
    with pytest.raises(ValueError, match="similarity"):
        select_masks(
            classes=[0],
            scores=[1.0],
            segmentations=[PERSON],
            similarities=None,
            controls=QualityControls(min_similarity=0),
        )


def test_drop_parts_keeps_parts_of_another_class() -> None:
    """A cup inside a person's box is not a part of the person; a shirt of the person class is."""
    person, cup, shirt = box(0, 0, 10, 10), box(2, 2, 5, 5), box(6, 0, 9, 10)
    kept = select_masks(
        classes=[0, 1, 0],
        scores=[0.5, 0.6, 0.7],
        segmentations=[person, cup, shirt],
        similarities=None,
        controls=QualityControls(drop_parts=0.9),
    )
    assert kept == [0, 1]
