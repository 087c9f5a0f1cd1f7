"""Parity of our mask records with a reference generator's, with every difference explained.

The criterion, in one sentence: our masks are the reference's, except where the reference's own logit
or filter value lies within float rounding of its threshold.

Each of our masks and each of the reference's is traced back to the reference's candidate for the same
crop, prompt point and output (``reference_trace``), and then:

* **Matched masks** (in both lists) may differ only at pixels whose reference logit lies within
  rounding of the mask threshold (``rounding.rounding_band``). With ``min_mask_region_area`` a flipped
  pixel can join or split a small region, and the clean-up then adds or removes the whole region: such a
  difference is explained only if the reference's own clean-up, run on the reference's mask with band
  pixels flipped, gives our mask exactly. Predicted IoUs differ by at most ``SCORE_ROUNDING``; the
  stability score lies within the range its band pixels allow (``rounding.stability_range``). Points
  are equal, and each box is exactly the box of its own mask, so a box differs only where an explained
  pixel moved an edge.
* **A mask in one list only** is explained only where the reference's value for its candidate lies
  within rounding of a filter's threshold: the predicted IoU within ``SCORE_ROUNDING`` of
  ``pred_iou_thresh``; ``stability_score_thresh`` within its stability range; the crop-edge test or a
  box NMS whose box IoU, with box edges moved by band pixels, reaches its threshold, or whose two scores
  are within rounding of each other (the order NMS visits them). Its mask must still be its candidate's
  mask up to band pixels.
* **Nothing else**: no count of allowed pixels, no IoU threshold, no per-case tolerance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from segment_anything.utils.amg import remove_small_regions

from ..mask_ops import decode_rle, mask_bbox_xywh, sam_bbox_xywh
from .reference_trace import Box, Candidate, ReferenceTrace, record_key, record_reference
from .rounding import RATIO_ROUNDING, SCORE_ROUNDING

MAX_BAND_SUBSETS = 10  # band pixels up to which every subset of flips is tried for a clean-up difference


@dataclass(frozen=True)
class ParityReport:
    """How our records compare with the reference's, and which differences the criterion explained."""

    matched: int  # masks in both lists
    ours_only: int  # masks only we have, each explained by a reference value at a threshold
    reference_only: int  # masks only the reference has, each explained likewise
    differing_pixels: int  # pixels in which matched masks differ, all explained
    carried_pixels: int  # of those, pixels a small-region clean-up carried from a band pixel
    max_iou_difference: float  # largest |difference| of a matched pair's predicted IoU
    unexplained: tuple[str, ...] = field(default=())  # one line per difference the criterion does not explain

    def holds(self) -> bool:
        return not self.unexplained

    def __str__(self) -> str:
        text = (
            f"{self.matched} masks matched, {self.ours_only} only ours and {self.reference_only} only the "
            f"reference's (explained), {self.differing_pixels} differing pixels explained "
            f"({self.carried_pixels} carried by the clean-up), largest predicted-IoU difference "
            f"{self.max_iou_difference:.2g}"
        )
        if self.unexplained:
            text += f"; {len(self.unexplained)} unexplained:\n  " + "\n  ".join(self.unexplained[:20])
        return text


def traced_reference_masks(reference: Any, image: np.ndarray) -> tuple[list[dict[str, Any]], ReferenceTrace]:
    """The reference generator's records for ``image`` and the trace of its candidates."""
    with record_reference(reference) as trace:
        records = reference.generate(image)
    return records, trace


def _clean_up(mask: np.ndarray, min_area: int) -> np.ndarray:
    """The reference's small-region clean-up: holes, then islands."""
    mask, _ = remove_small_regions(mask, min_area, mode="holes")
    mask, _ = remove_small_regions(mask, min_area, mode="islands")
    return mask


def _box_iou_range(a: Candidate, b: Candidate) -> tuple[float, float]:
    """Lowest and highest box IoU of two candidates as NMS computes it (XYXY boxes taken as given, as
    the reference passes its inclusive-edge boxes), with each box with and without its band pixels."""
    values = []
    for box_a, box_b in itertools.product((a.box_without_band, a.box_with_band), (b.box_without_band, b.box_with_band)):
        area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
        area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
        width = max(0, min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]))
        height = max(0, min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]))
        union = area_a + area_b - width * height
        values.append(width * height / union if union > 0 else 0.0)
    return min(values), max(values)


class _Checker:
    """One comparison: our records and the reference's against the trace of the reference's run."""

    def __init__(self, trace: ReferenceTrace) -> None:
        self.trace = trace
        self.settings = trace.settings
        self.unexplained: list[str] = []
        self.differing_pixels = 0
        self.carried_pixels = 0

    # -- tracing records back to candidates --------------------------------------------------------

    def our_candidate(self, index: int, record: dict[str, Any], mask: np.ndarray) -> Candidate | None:
        """The reference's candidate of our record: at its crop and point, or, for a COCO annotation
        (which carries neither), among all candidates; the closest mask of those with its predicted IoU."""
        if "point_coords" in record:
            crop_box, point = record_key(record)
            candidates = self.trace.at(crop_box, point)
            if not candidates:
                self.unexplained.append(
                    f"our mask {index}: point {list(point)} in crop {list(crop_box)} is no prompt of the reference"
                )
                return None
        else:
            candidates = self.trace.candidates
        close = [c for c in candidates if abs(c.predicted_iou - record["predicted_iou"]) <= SCORE_ROUNDING]
        if not close:
            nearest = min(abs(c.predicted_iou - record["predicted_iou"]) for c in candidates)
            self.unexplained.append(
                f"our mask {index}: predicted IoU {record['predicted_iou']:.6f} is {nearest:.2g} from every "
                f"candidate of its point (rounding: {SCORE_ROUNDING})"
            )
            return None
        reachable = [c for c in close if c.reachable]
        if not reachable:
            self.unexplained.append(
                f"our mask {index}: the reference's filters reject its candidate far from their thresholds"
            )
            return None
        return min(reachable, key=lambda c: self._unexplained_pixels(mask, c))

    # -- the checks ---------------------------------------------------------------------------------

    def _unexplained_pixels(self, mask: np.ndarray, candidate: Candidate) -> int:
        difference = np.logical_xor(mask, candidate.mask()).ravel()
        difference[candidate.band] = False
        return int(difference.sum())

    def check_mask(self, label: str, mask: np.ndarray, candidate: Candidate, reference_mask: np.ndarray) -> None:
        """``mask`` may differ from ``reference_mask`` only at band pixels of ``candidate``, or as the
        clean-up carries band flips."""
        difference = np.logical_xor(mask, reference_mask)
        count = int(difference.sum())
        if not count:
            return
        outside = difference.ravel().copy()
        outside[candidate.band] = False
        carried = int(outside.sum())
        if carried and not self._carried_by_clean_up(mask, candidate):
            self.unexplained.append(
                f"{label}: differs from the reference in {carried} pixel(s) whose reference logit is not within "
                f"rounding of the threshold"
            )
            return
        self.differing_pixels += count
        self.carried_pixels += carried

    def _carried_by_clean_up(self, mask: np.ndarray, candidate: Candidate) -> bool:
        """Whether the reference's clean-up of its raw mask, with some band pixels flipped, is ``mask``."""
        min_area = self.settings.min_mask_region_area
        if min_area <= 0:
            return False
        raw = candidate.mask()
        band = candidate.band
        if len(band) <= MAX_BAND_SUBSETS:
            flip_sets = (list(s) for r in range(len(band) + 1) for s in itertools.combinations(band, r))
        else:  # too many to try: the band pixels as our mask has them
            flip_sets = iter([[], band[mask.ravel()[band] != raw.ravel()[band]]])
        for flips in flip_sets:
            flipped = raw.copy().ravel()
            flipped[flips] = ~flipped[flips]
            if np.array_equal(_clean_up(flipped.reshape(raw.shape), min_area), mask):
                return True
        return False

    def check_record(self, label: str, record: dict[str, Any], mask: np.ndarray, candidate: Candidate) -> None:
        """Box, area and stability of one of our records against its candidate. A generator record's box
        is SAM's (``batched_mask_to_box``), a COCO annotation's (no ``crop_box``) pycocotools' ``toBbox``."""
        box = sam_bbox_xywh(mask) if "crop_box" in record else mask_bbox_xywh(mask)
        if [float(v) for v in record["bbox"]] != [float(v) for v in box]:
            self.unexplained.append(f"{label}: bbox {list(record['bbox'])} is not its mask's box {box}")
        if "area" in record and record["area"] != int(mask.sum()):
            self.unexplained.append(f"{label}: area {record['area']} is not its mask's {int(mask.sum())} pixels")
        low, high = candidate.stability_bounds
        stability = record["stability_score"]
        if not (np.isnan(low) and np.isnan(stability)) and not (
            low - RATIO_ROUNDING <= stability <= high + RATIO_ROUNDING
        ):
            self.unexplained.append(
                f"{label}: stability score {stability:.6f} outside [{low:.6f}, {high:.6f}], the range its "
                f"reference logits allow"
            )

    # -- masks in one list only ---------------------------------------------------------------------

    def passes_reference_filters(self, candidate: Candidate) -> bool:
        settings = self.settings
        iou_ok = settings.pred_iou_thresh <= 0.0 or candidate.predicted_iou > settings.pred_iou_thresh
        stability_ok = (
            settings.stability_score_thresh <= 0.0 or candidate.stability_score >= settings.stability_score_thresh
        )
        return candidate.reachable and iou_ok and stability_ok

    def filter_at_threshold(self, candidate: Candidate, pool: list[Candidate], one_list: set[int]) -> str | None:
        """Which filter's threshold the reference's value for ``candidate`` lies at, or None."""
        settings = self.settings
        if settings.pred_iou_thresh > 0.0 and abs(candidate.predicted_iou - settings.pred_iou_thresh) <= SCORE_ROUNDING:
            return "predicted IoU"
        low, high = candidate.stability_bounds
        threshold = settings.stability_score_thresh
        if threshold > 0.0 and low - RATIO_ROUNDING <= threshold <= high + RATIO_ROUNDING:
            return "stability score"
        if self._near_crop_edge(candidate.box_without_band, candidate) != self._near_crop_edge(
            candidate.box_with_band, candidate
        ):
            return "crop edge"
        thresholds = [t for t in self._nms_thresholds() if t < 1.0]
        for other in pool:
            if other is candidate:
                continue
            low_iou, high_iou = _box_iou_range(candidate, other)
            for nms in thresholds:
                at_threshold = low_iou - RATIO_ROUNDING <= nms <= high_iou + RATIO_ROUNDING
                overlapping = high_iou > nms - RATIO_ROUNDING
                close_scores = abs(candidate.predicted_iou - other.predicted_iou) <= SCORE_ROUNDING
                if at_threshold or (overlapping and (close_scores or id(other) in one_list)):
                    return "box NMS"
        return None

    def _nms_thresholds(self) -> list[float]:
        settings = self.settings
        thresholds = [settings.box_nms_thresh]
        if settings.crop_n_layers > 0:  # the reference compares boxes between crops only where there are crops
            thresholds.append(settings.crop_nms_thresh)
        if settings.min_mask_region_area > 0:
            thresholds.append(max(settings.box_nms_thresh, settings.crop_nms_thresh))
        return thresholds

    def _near_crop_edge(self, box: Box, candidate: Candidate) -> bool:
        """``is_box_near_crop_edge`` of an image-frame XYXY box (20-pixel tolerance)."""
        height, width = self.trace.image_hw
        crop = candidate.crop_box
        near = [abs(box[i] - crop[i]) <= 20.0 and not abs(box[i] - (0, 0, width, height)[i]) <= 20.0 for i in range(4)]
        return any(near)


def check_parity(
    ours: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    trace: ReferenceTrace,
    *,
    allow_empty: bool = False,
) -> ParityReport:
    """Compare our mask records with the reference's, whose candidates ``trace`` recorded (see the
    module docstring for the criterion). An empty reference is refused (two empty lists agree whatever
    the code does) unless ``allow_empty``."""
    if not reference and not allow_empty:
        raise ValueError(
            "the reference has no masks, and an empty list equals an empty list: choose settings (or shift the "
            "random weights) so that masks survive"
        )
    checker = _Checker(trace)
    reference_of = {id(trace.candidate_of(record)): index for index, record in enumerate(reference)}
    our_masks = [decode_rle(record["segmentation"]) for record in ours]
    ours_of: dict[int, int] = {}
    candidates: dict[int, Candidate] = {}
    for index, (record, mask) in enumerate(zip(ours, our_masks, strict=True)):
        candidate = checker.our_candidate(index, record, mask)
        if candidate is None:
            continue
        if id(candidate) in ours_of:
            checker.unexplained.append(f"our masks {ours_of[id(candidate)]} and {index} are the same candidate")
            continue
        ours_of[id(candidate)] = index
        candidates[id(candidate)] = candidate
    for record in reference:
        candidate = trace.candidate_of(record)
        candidates[id(candidate)] = candidate

    one_list = {key for key in candidates if (key in ours_of) != (key in reference_of)}
    pool = [c for c in trace.candidates if checker.passes_reference_filters(c)] + [candidates[key] for key in one_list]
    matched = ours_only = reference_only = 0
    iou_difference = 0.0
    for key, candidate in candidates.items():
        our_index, reference_index = ours_of.get(key), reference_of.get(key)
        if our_index is not None:
            label = f"our mask {our_index}"
            if reference_index is not None:
                reference_mask = decode_rle(reference[reference_index]["segmentation"])
                iou_difference = max(
                    iou_difference, abs(ours[our_index]["predicted_iou"] - reference[reference_index]["predicted_iou"])
                )
            else:
                reference_mask = candidate.mask()
            checker.check_mask(label, our_masks[our_index], candidate, reference_mask)
            checker.check_record(label, ours[our_index], our_masks[our_index], candidate)
        if our_index is not None and reference_index is not None:
            matched += 1
            continue
        reason = checker.filter_at_threshold(candidate, pool, one_list)
        side = "ours" if our_index is not None else "the reference's"
        where = f"our mask {our_index}" if our_index is not None else f"reference mask {reference_index}"
        if reason is None:
            checker.unexplained.append(
                f"{where} is only {side}, and no reference value of its candidate lies at a filter's threshold "
                f"(predicted IoU {candidate.predicted_iou:.6f}, stability {candidate.stability_score:.6f})"
            )
        elif our_index is not None:
            ours_only += 1
        else:
            reference_only += 1
    return ParityReport(
        matched=matched,
        ours_only=ours_only,
        reference_only=reference_only,
        differing_pixels=checker.differing_pixels,
        carried_pixels=checker.carried_pixels,
        max_iou_difference=iou_difference,
        unexplained=tuple(checker.unexplained),
    )
