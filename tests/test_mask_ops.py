"""Pure mask math against brute-force and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gem_sam.mask_ops import (
    decode_rle,
    encode_rle,
    linear_upsampling_matrix,
    mask_bbox_xywh,
    min_max_scale,
    pool_in_masks,
    rle_area,
    sam_bbox_xywh,
)


def _mask(kind: str, shape=(7, 9)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    if kind == "full":
        mask[:] = True
    elif kind == "one_pixel":
        mask[3, 5] = True
    elif kind == "corner":
        mask[0, 0] = True
    elif kind == "block":
        mask[2:5, 1:8] = True
    elif kind == "ring":
        mask[1:6, 1:8] = True
        mask[2:5, 3:6] = False
    return mask


@pytest.mark.parametrize(
    "kind,area,bbox",
    [
        ("empty", 0, [0.0, 0.0, 0.0, 0.0]),
        ("full", 63, [0.0, 0.0, 9.0, 7.0]),
        ("one_pixel", 1, [5.0, 3.0, 1.0, 1.0]),
        ("corner", 1, [0.0, 0.0, 1.0, 1.0]),
        ("block", 21, [1.0, 2.0, 7.0, 3.0]),
        ("ring", 26, [1.0, 1.0, 7.0, 5.0]),
    ],
)
def test_rle_round_trip_area_and_box(kind: str, area: int, bbox: list[float]) -> None:
    mask = _mask(kind)
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [7, 9]
    np.testing.assert_array_equal(decode_rle(rle), mask)
    assert rle_area(rle) == area == int(mask.sum())
    assert mask_bbox_xywh(mask) == bbox


@pytest.mark.parametrize(
    "kind,bbox",
    [
        ("empty", [0, 0, 0, 0]),
        ("full", [0, 0, 8, 6]),
        ("one_pixel", [5, 3, 0, 0]),
        ("corner", [0, 0, 0, 0]),
        ("block", [1, 2, 6, 2]),
        ("ring", [1, 1, 6, 4]),
    ],
)
def test_sam_box_is_what_sams_generators_record(kind: str, bbox: list[int]) -> None:
    """By hand (right and bottom indices minus left and top), and by segment-anything's own functions."""
    from segment_anything.utils.amg import batched_mask_to_box, box_xyxy_to_xywh

    mask = _mask(kind)
    assert sam_bbox_xywh(mask) == bbox
    assert box_xyxy_to_xywh(batched_mask_to_box(torch.from_numpy(mask))).tolist() == bbox


@pytest.mark.parametrize("out_size,in_size", [(5, 5), (16, 4), (7, 3), (3, 7), (1, 1), (480, 30)])
def test_upsampling_matrix_matches_interpolate(out_size: int, in_size: int) -> None:
    signal = torch.randn(in_size, dtype=torch.float64)
    expected = F.interpolate(signal[None, None], size=out_size, mode="linear", align_corners=False)[0, 0]
    matrix = linear_upsampling_matrix(out_size, in_size).double()
    torch.testing.assert_close(matrix @ signal, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(out_size, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["full", "one_pixel", "corner", "block", "ring"])
@pytest.mark.parametrize("grid_hw", [(2, 3), (4, 4), (7, 9)])
def test_pooling_equals_mean_of_upsampled_map(kind: str, grid_hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    similarity = torch.randn(3, *grid_hw)
    mask = torch.from_numpy(_mask(kind))
    upsampled = F.interpolate(similarity[None], size=mask.shape, mode="bilinear", align_corners=False)[0]
    expected = upsampled[:, mask].mean(dim=1)  # [C]
    pooled = pool_in_masks(similarity, mask[None])
    torch.testing.assert_close(pooled[0], expected, atol=1e-5, rtol=0)


def test_pooling_empty_mask_and_no_masks() -> None:
    similarity = torch.ones(2, 3, 3)
    assert pool_in_masks(similarity, torch.zeros(1, 5, 5, dtype=torch.bool)).tolist() == [[0.0, 0.0]]
    assert pool_in_masks(similarity, torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 2)


def test_pooling_chunks_give_the_same_result() -> None:
    torch.manual_seed(1)
    similarity = torch.randn(4, 5, 6)
    masks = torch.rand(10, 40, 48) > 0.5
    torch.testing.assert_close(pool_in_masks(similarity, masks, chunk=3), pool_in_masks(similarity, masks, chunk=16))


@pytest.mark.parametrize(
    "values,expected",
    [
        ([[1.0, 2.0], [3.0, 5.0]], [[0.0, 0.25], [0.5, 1.0]]),
        ([[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]),  # constant map: 0, not NaN
        ([[-1.0, 0.0], [0.0, 1.0]], [[0.0, 0.5], [0.5, 1.0]]),
    ],
)
def test_min_max_scale(values: list, expected: list) -> None:
    out = min_max_scale(torch.tensor(values)[None])
    torch.testing.assert_close(out[0], torch.tensor(expected))
