"""Label Studio's region formats: brush RLE through the SDK's own decoder, polygons by hand, the config."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from gem_sam.review.brush import brush_rle_to_mask, mask_to_brush_rle, polygon_to_mask
from gem_sam.review.label_studio import label_config


@pytest.mark.parametrize("shape", [(1, 1), (4, 5), (37, 53)])
def test_brush_rle_decodes_with_the_sdk_to_our_mask(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.6
    rle = mask_to_brush_rle(mask)
    rgba = decode_rle(rle).reshape(*shape, 4)  # Label Studio's own decoder
    np.testing.assert_array_equal(rgba[:, :, 3] > 0, mask)
    np.testing.assert_array_equal(brush_rle_to_mask(rle, shape), mask)


def test_a_brush_rle_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit an RGBA image of 4x4"):
        brush_rle_to_mask(mask_to_brush_rle(np.ones((3, 3), dtype=bool)), (4, 4))


def test_polygon_in_percent_by_hand() -> None:
    """A square from (20%, 25%) to (60%, 75%) of a 10x8 image covers pixels x 2..5, y 2..5 as COCO
    rasterises polygons (a pixel is inside when its centre is)."""
    mask = polygon_to_mask([[20, 25], [60, 25], [60, 75], [20, 75]], (8, 10))
    expected = np.zeros((8, 10), dtype=bool)
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match="at least 3 points"):
        polygon_to_mask([[0, 0], [1, 1]], (8, 10))


def test_label_config_lists_the_classes() -> None:
    config = ElementTree.fromstring(label_config(["cat", 'a "quoted" & <odd> name']))
    for control in ("BrushLabels", "PolygonLabels"):
        labels = [label.get("value") for label in next(config.iter(control)).iter("Label")]
        assert labels == ["cat", 'a "quoted" & <odd> name']
