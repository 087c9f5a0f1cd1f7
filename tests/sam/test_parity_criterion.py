"""The parity criterion itself (``gem_sam.sam.parity``): it explains rounding, and it catches breaks.

Our records of a real photo are compared with SAM's own generator's, then broken on purpose; each break
must be reported. The explained cases are built by hand where this machine's rounding gives none.
"""

from __future__ import annotations

import copy
import dataclasses

import cv2
import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator

from gem_sam.mask_ops import decode_rle, encode_rle, sam_bbox_xywh
from gem_sam.sam import GridMaskGenerator, MaskGeneratorConfig
from gem_sam.sam.parity import check_parity, traced_reference_masks
from gem_sam.sam.reference_trace import Candidate, GeneratorSettings, ReferenceTrace
from gem_sam.sam.rounding import LOGIT_ROUNDING, rounding_band, stability_range

from ..conftest import LOOSE_SETTINGS, rgb_photo, tiny_sam


@pytest.fixture(scope="module")
def compared():
    """Our records, the reference's and its trace, for a 6x6 grid on a real photo."""
    sam = tiny_sam()
    image = rgb_photo("astronaut.png", long_side=150)
    config = MaskGeneratorConfig(points_per_side=6, **LOOSE_SETTINGS)
    ours = GridMaskGenerator(sam, config=config).generate(image)
    reference, trace = traced_reference_masks(
        SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **config.reference_kwargs()), image
    )
    assert len(reference) >= 20
    return ours, reference, trace


def with_mask(record: dict, mask: np.ndarray) -> dict:
    """The record with another mask, its area and SAM's box of it kept consistent."""
    return {**record, "segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": sam_bbox_xywh(mask)}


def test_our_records_hold(compared) -> None:
    ours, reference, trace = compared
    report = check_parity(ours, reference, trace)
    assert report.holds(), report
    assert report.matched == len(reference) == len(ours)


def deepest_pixel(mask: np.ndarray) -> tuple[int, int]:
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    return np.unravel_index(int(distance.argmax()), mask.shape)


def drop_deepest_pixel(record: dict) -> dict:
    mask = decode_rle(record["segmentation"])
    mask[deepest_pixel(mask)] = False
    return with_mask(record, mask)


def thin(record: dict, share: float = 0.0025) -> dict:
    """Remove ``share`` of the mask's pixels (at least one), taken from its boundary."""
    mask = decode_rle(record["segmentation"])
    boundary = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    rows, cols = boundary.nonzero()
    count = max(1, int(np.ceil(share * mask.sum())))
    mask[rows[:count], cols[:count]] = False
    return with_mask(record, mask)


def widen_box(record: dict) -> dict:
    x, y, w, h = record["bbox"]
    return {**record, "bbox": [x, y, w + 1, h]}


def move_point(record: dict) -> dict:
    (x, y), *_ = record["point_coords"]
    return {**record, "point_coords": [[x + 1.0, y]]}


@pytest.mark.parametrize(
    "break_record,message",
    [
        (drop_deepest_pixel, "not within rounding of the threshold"),
        (thin, "not within rounding of the threshold"),
        (widen_box, "is not its mask's box"),
        (move_point, "is no prompt of the reference"),
    ],
    ids=["deepest-pixel-dropped", "thinned-0.25%", "box-one-pixel-wider", "point-moved"],
)
def test_every_broken_mask_is_reported(compared, break_record, message: str) -> None:
    ours, reference, trace = compared
    report = check_parity([break_record(record) for record in ours], reference, trace)
    assert not report.holds()
    assert sum(message in line for line in report.unexplained) == len(ours), report


def test_a_missing_mask_far_from_every_threshold_is_reported(compared) -> None:
    ours, reference, trace = compared
    settings = trace.settings
    margin = [min(abs(r["stability_score"] - settings.stability_score_thresh), 1.0) for r in ours]
    dropped = int(np.argmax(margin))
    assert margin[dropped] > 0.05  # far from the stability threshold; the IoU filter is off
    report = check_parity([r for i, r in enumerate(ours) if i != dropped], reference, trace)
    assert [line for line in report.unexplained if "is only the reference's" in line], report
    extra = check_parity([*ours, copy.deepcopy(ours[0])], reference, trace)
    assert [line for line in extra.unexplained if "are the same candidate" in line], extra


def test_a_stability_score_outside_its_range_is_reported(compared) -> None:
    ours, reference, trace = compared
    shifted = [{**r, "stability_score": r["stability_score"] + 1e-3} for r in ours]
    report = check_parity(shifted, reference, trace)
    assert sum("stability score" in line for line in report.unexplained) == len(ours), report


def test_a_flip_inside_the_rounding_band_is_explained(compared) -> None:
    """A boundary pixel put into its candidate's band (as another CPU's rounding would) may flip."""
    ours, reference, trace = compared
    record = ours[0]
    mask = decode_rle(record["segmentation"])
    row, col = np.argwhere(mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))[0]
    width = mask.shape[1]
    twin = next(r for r in reference if r["point_coords"] == record["point_coords"] and r["bbox"] == record["bbox"])
    candidate = trace.candidate_of(twin)
    index = trace.candidates.index(candidate)
    banded = dataclasses.replace(trace.candidates[index], band=np.array([row * width + col]))
    edited = dataclasses.replace(trace, candidates=[*trace.candidates])
    edited.candidates[index] = banded
    edited.finish()
    flipped = mask.copy()
    flipped[row, col] = False
    report = check_parity([with_mask(record, flipped), *ours[1:]], reference, edited)
    assert report.holds(), report
    assert report.differing_pixels == 1 and report.carried_pixels == 0
    assert not check_parity([with_mask(record, flipped), *ours[1:]], reference, trace).holds()


def _hand_trace(raw: np.ndarray, band: list[int], *, min_area: int) -> tuple[ReferenceTrace, Candidate]:
    settings = GeneratorSettings(
        mask_threshold=0.0, pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=1.0,
        box_nms_thresh=1.0, crop_nms_thresh=1.0, crop_n_layers=0, min_mask_region_area=min_area, use_m2m=False,
    )  # fmt: skip
    height, width = raw.shape
    candidate = Candidate(
        crop_box=(0, 0, width, height), point_xy=(2.0, 2.0), output=0, predicted_iou=0.9, stability_score=0.9,
        stability_bounds=(0.9, 0.9), reachable=True, mask_rle=encode_rle(raw), band=np.array(band),
        box_without_band=(0, 0, 0, 0), box_with_band=(0, 0, 0, 0),
    )  # fmt: skip
    trace = ReferenceTrace(settings, image_hw=(height, width), candidates=[candidate])
    trace.finish()
    return trace, candidate


def _hand_record(mask: np.ndarray) -> dict:
    height, width = mask.shape
    return {
        "segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": sam_bbox_xywh(mask), "predicted_iou": 0.9,
        "stability_score": 0.9, "point_coords": [[2.0, 2.0]], "crop_box": [0, 0, width, height],
    }  # fmt: skip


def test_a_region_the_clean_up_carries_from_a_band_pixel_is_explained() -> None:
    """A 10x10 block with a 3-pixel tail attached through one band pixel (8 columns wide image). The
    reference's clean-up at 5 pixels keeps the tail where the band pixel is set (one region) and removes
    it where it is not (an island of 3): our mask without the tail differs in 4 pixels, 1 in the band
    and 3 carried by the clean-up. Removing the tail without the band pixel explains nothing."""
    raw = np.zeros((14, 12), dtype=bool)
    raw[0:10, 0:10] = True
    raw[10, 4] = True  # the band pixel, joining the tail to the block
    raw[11:14, 4] = True  # the tail: 3 pixels
    band = [10 * 12 + 4]
    trace, _ = _hand_trace(raw, band, min_area=5)
    reference_mask = raw  # its clean-up keeps everything: one region, no hole
    ours = raw.copy()
    ours[10:14, 4] = False  # the band pixel flipped, the tail removed by the clean-up
    report = check_parity([_hand_record(ours)], [_hand_record(reference_mask)], trace)
    assert report.holds(), report
    assert (report.differing_pixels, report.carried_pixels) == (4, 3)
    tail_only = raw.copy()
    tail_only[11:14, 4] = False
    assert not check_parity([_hand_record(tail_only)], [_hand_record(reference_mask)], trace).holds()
    no_clean_up, _ = _hand_trace(raw, band, min_area=0)
    assert not check_parity([_hand_record(ours)], [_hand_record(reference_mask)], no_clean_up).holds()


def test_rounding_band_by_hand() -> None:
    """Largest |logit| 10: rounding is 10 * LOGIT_ROUNDING = 2e-4 around the threshold 0."""
    logits = torch.tensor([[[10.0, 1e-4, -1.9e-4, -2.1e-4, -10.0]]])
    assert LOGIT_ROUNDING == 2e-5
    assert rounding_band(logits, 0.0).tolist() == [[[False, True, True, False, False]]]


def test_stability_range_by_hand() -> None:
    """Threshold 0, offset 1, rounding 2e-4: 10 is surely above +1 and 1.0001 may be; 10, 1.0001 and 0.5
    are surely above -1 and -0.9999 may be. Stability: from 1/4 to 2/3 (the reference's own is 2/4)."""
    logits = torch.tensor([[[10.0, 1.0001, 0.5, -0.9999, -10.0]]])
    low, high = stability_range(logits, 0.0, 1.0)
    assert (float(low[0]), float(high[0])) == pytest.approx((1 / 4, 2 / 3))
    empty_low, empty_high = stability_range(torch.full((1, 2, 2), -5.0), 0.0, 1.0)
    assert np.isnan(float(empty_low[0])) and np.isnan(float(empty_high[0]))
