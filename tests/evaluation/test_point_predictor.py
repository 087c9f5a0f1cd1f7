"""gem-sam rules against hand computations, device handling, and the label rule end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gem_sam.evaluation.point_metric import points_to_pixels
from gem_sam.evaluation.point_predictor import (
    PointPredictor,
    SamRefinement,
    mask_classes_and_means,
    refine_with_masks,
    union_of_labelled_masks,
)
from gem_sam.mask_ops import decode_rle
from gem_sam.naming.scorer import build_gem_scorer
from gem_sam.sam import build_mask_generator

from ..conftest import LOOSE_SETTINGS, TINY_CLIP_NAME, TINY_SAM_NAME, rgb_photo

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
def test_mean_rules(overlap: str, uncovered: str, expected: list[float]) -> None:
    rule = SamRefinement(rule="mean", overlap=overlap, uncovered=uncovered)
    values = refine_with_masks(MEANS, COVERING, AREAS, MAP, rule)
    np.testing.assert_allclose(values[0], expected)


def test_no_masks_falls_back_everywhere() -> None:
    values = refine_with_masks(np.zeros((0, 1)), np.zeros((0, 3), bool), np.zeros(0), MAP, SamRefinement(rule="mean"))
    np.testing.assert_allclose(values, MAP)


@pytest.mark.parametrize(
    "mask_classes,covering,expected",
    [
        # three masks over four points; masks 0 and 2 are class 0, mask 1 class 2; class 1 has none
        (
            [0, 2, 0],
            [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]],
            [[1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]],
        ),
        ([1], [[0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),  # an empty mask covers nothing
        ([], np.zeros((0, 4)), np.zeros((3, 4))),  # no masks: nothing is predicted
    ],
)
def test_label_rule_is_the_union_of_each_class_masks(mask_classes, covering, expected) -> None:
    got = union_of_labelled_masks(np.array(mask_classes, dtype=np.int64), np.array(covering, dtype=bool), 3)
    np.testing.assert_array_equal(got, np.array(expected, dtype=bool))


def test_mask_values_by_hand() -> None:
    # class 0 is 1.0 everywhere, class 1 is 0.0 left / 2.0 right, on a 2x2 grid upsampled to 4x4
    similarity = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 2.0], [0.0, 2.0]]])
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :, 0] = True  # leftmost column: class 1 upsampled is 0 there (edge clamp)
    masks[1, :, 3] = True  # rightmost column: class 1 is 2 there
    low, span = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0])
    classes, means = mask_classes_and_means(similarity, masks, low, span)
    assert classes.tolist() == [0, 1]
    torch.testing.assert_close(means, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_mask_values_stay_on_the_maps_device() -> None:
    """Maps on one device (here 'meta', standing in for a GPU) and masks decoded on the CPU: any
    arithmetic that mixes the two devices raises, as it would on CUDA."""
    similarity = torch.zeros(3, 4, 5, device="meta")
    low, span = torch.zeros(3, device="meta"), torch.ones(3, device="meta")
    masks = torch.zeros(2, 32, 40, dtype=torch.bool)
    classes, means = mask_classes_and_means(similarity, masks, low, span)
    assert classes.device.type == "meta" and means.device.type == "meta" and means.shape == (2, 3)


@pytest.fixture(scope="module")
def tiny_models(tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path):
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint), device="cpu")
    generator = build_mask_generator(
        model_type=TINY_SAM_NAME, checkpoint=str(tiny_sam_checkpoint), device="cpu", points_per_side=4, **LOOSE_SETTINGS
    )
    return scorer, generator


def test_label_rule_end_to_end(tiny_models) -> None:
    """Each SAM mask takes the class of highest mean similarity (full-resolution map, computed here
    independently); a point is predicted for a class exactly when one of its masks covers it."""
    scorer, generator = tiny_models
    image = rgb_photo("coffee.png", long_side=120)
    names = ["cup", "table", "person"]
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, 40), rng.uniform(0, 1, 40)
    predictor = PointPredictor(method="gem-sam", scorer=scorer, mask_generator=generator)
    assert predictor.refinement.rule == "label"
    inside = predictor.inside(image, names, x, y)

    records = generator.generate(image)
    assert len(records) >= 5
    similarity = scorer.patch_similarity(scorer.preprocess(image), scorer.encode_text(names))
    upsampled = F.interpolate(similarity, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    rows, cols = points_to_pixels(x, y, size_hw=image.shape[:2])
    expected = np.zeros((len(names), len(x)), dtype=bool)
    for record in records:
        mask = decode_rle(record["segmentation"])
        best = int(upsampled[:, torch.from_numpy(mask)].mean(dim=1).argmax()) if mask.any() else None
        if best is not None:
            expected[best] |= mask[rows, cols]
    np.testing.assert_array_equal(inside, expected)
    assert inside.any() and not inside.all()


def test_bad_rules() -> None:
    with pytest.raises(ValueError, match="gem-sam rule 'union'"):
        SamRefinement(rule="union")
    with pytest.raises(ValueError, match="overlap rule 'min'"):
        SamRefinement(overlap="min")
    with pytest.raises(ValueError, match="uncovered rule 'nan'"):
        SamRefinement(uncovered="nan")


def test_settings_name_only_the_rules_in_effect() -> None:
    assert SamRefinement().settings() == {"rule": "label"}
    assert SamRefinement(rule="mean", overlap="smallest").settings() == {
        "rule": "mean",
        "overlap": "smallest",
        "uncovered": "map",
    }
