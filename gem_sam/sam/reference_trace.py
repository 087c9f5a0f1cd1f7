"""What a reference generator computed for every candidate mask, recorded while it runs.

A parity check has to tell a rounding difference from a bug, and only the reference's own numbers can
say which pixels and which filter decisions lie within float rounding. ``record_reference`` wraps two
calls of one reference generator instance (``SamAutomaticMaskGenerator`` or
``SAM2AutomaticMaskGenerator``) while it generates: its batch step, for the points and the crop, and its
predictor's prediction call, for the full-resolution logits and predicted IoUs it is about to filter
(``SamPredictor.predict_torch``; ``SAM2ImagePredictor._predict``, whose ``use_m2m`` refinement calls are
the ones filtered then). Nothing the reference computes is changed.

For each candidate (a crop, a point and one of its masks) the trace keeps what ``parity`` needs, in the
image frame: the predicted IoU and stability score as the reference has them, the range the stability
score takes when the logits within rounding of its two thresholds flip, and, for candidates that could
reach the output, the mask (logits above the threshold), the pixels whose logit lies within rounding of
the threshold (the band), and the box with and without the band.

Boxes are XYXY with inclusive right and bottom edges (``batched_mask_to_box``); points are (x, y) image
pixels in the reference's dtype; flat pixel indices are ``row * width + column``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

from ..mask_ops import decode_rle, encode_rle
from .rounding import SCORE_ROUNDING, rounding_band, stability_range

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class GeneratorSettings:
    """The reference generator's filter settings, as its instance holds them."""

    mask_threshold: float
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    box_nms_thresh: float
    crop_nms_thresh: float
    crop_n_layers: int
    min_mask_region_area: int
    use_m2m: bool

    @classmethod
    def of(cls, generator: Any) -> GeneratorSettings:
        threshold = getattr(generator, "mask_threshold", None)
        if threshold is None:  # SAM 1 keeps it on the model
            threshold = generator.predictor.model.mask_threshold
        return cls(
            mask_threshold=float(threshold),
            pred_iou_thresh=float(generator.pred_iou_thresh),
            stability_score_thresh=float(generator.stability_score_thresh),
            stability_score_offset=float(generator.stability_score_offset),
            box_nms_thresh=float(generator.box_nms_thresh),
            crop_nms_thresh=float(generator.crop_nms_thresh),
            crop_n_layers=int(generator.crop_n_layers),
            min_mask_region_area=int(generator.min_mask_region_area),
            use_m2m=bool(getattr(generator, "use_m2m", False)),
        )


@dataclass(frozen=True)
class Candidate:
    """One candidate mask of the reference, in the image frame."""

    crop_box: Box  # XYXY of the crop it was predicted in
    point_xy: tuple[float, float]  # its prompt point, exactly as the reference records it
    output: int  # which of the point's masks (0 .. K-1, in the reference's order)
    predicted_iou: float
    stability_score: float  # as the reference computes it
    stability_bounds: tuple[float, float]  # what it becomes as logits within rounding of its thresholds flip
    reachable: bool  # whether the per-candidate filters can pass it within rounding (the rest is scalars only)
    mask_rle: dict[str, Any] | None = None  # logits above the threshold (COCO RLE); reachable candidates only
    band: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # flat indices, rounding band
    box_without_band: Box = (0, 0, 0, 0)  # box of the mask without its band pixels
    box_with_band: Box = (0, 0, 0, 0)  # box of the mask with every band pixel set

    @property
    def key(self) -> tuple[Box, tuple[float, float]]:
        return self.crop_box, self.point_xy

    def mask(self) -> np.ndarray:
        """The reference's mask of this candidate, [H, W] bool (reachable candidates only)."""
        assert self.mask_rle is not None, "only reachable candidates keep their mask"
        return decode_rle(self.mask_rle)


@dataclass
class ReferenceTrace:
    """Every candidate of one ``generate`` call of the reference, and its settings."""

    settings: GeneratorSettings
    image_hw: tuple[int, int] = (0, 0)
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0  # time spent recording (not the reference's own work)

    def at(self, crop_box: Box, point_xy: tuple[float, float]) -> list[Candidate]:
        """The candidates of one prompt point in one crop."""
        return self._by_key.get((tuple(crop_box), tuple(point_xy)), [])

    def candidate_of(self, record: dict[str, Any]) -> Candidate:
        """The candidate a record of the traced ``generate`` call came from (same crop, point and
        predicted IoU)."""
        for candidate in self.at(*record_key(record)):
            if candidate.predicted_iou == record["predicted_iou"]:
                return candidate
        raise ValueError("a reference record has no candidate in the trace: record it from the same generate call")

    def finish(self) -> None:
        self._by_key: dict[tuple[Box, tuple[float, float]], list[Candidate]] = {}
        for candidate in self.candidates:
            self._by_key.setdefault(candidate.key, []).append(candidate)


def record_key(record: dict[str, Any]) -> tuple[Box, tuple[float, float]]:
    """A generator record's crop (XYWH in the record, XYXY here) and prompt point."""
    x, y, w, h = (int(v) for v in record["crop_box"])
    return (x, y, x + w, y + h), tuple(float(v) for v in record["point_coords"][0])


class _Recorder:
    """The wrapped calls' shared state while one batch of points is processed."""

    def __init__(self, trace: ReferenceTrace, points_dtype: torch.dtype) -> None:
        self.trace = trace
        self.points_dtype = points_dtype
        self.batch: dict[str, Any] | None = None

    def begin_batch(self, points_xy: np.ndarray, crop_box: list[int], orig_hw: tuple[int, int]) -> None:
        self.trace.image_hw = (int(orig_hw[0]), int(orig_hw[1]))
        self.batch = {"points": points_xy, "crop_box": tuple(int(v) for v in crop_box), "outputs": None, "next": 0}

    def observe(self, masks: torch.Tensor, ious: torch.Tensor, *, refinement: bool) -> None:
        """masks [B, K, h, w] full-resolution logits over the crop, ious [B, K], of one prediction call."""
        batch = self.batch
        if batch is None:
            return
        if self.trace.settings.use_m2m and not refinement:
            batch["outputs"] = masks.shape[1]  # the first pass: its masks are refined, then filtered
            return
        start = time.perf_counter()
        per_point = batch["outputs"] or masks.shape[1]
        first = batch["next"]
        logits = masks.flatten(0, 1).float()  # [n, h, w]
        flat_ious = ious.flatten(0, 1).float()
        batch["next"] = first + len(logits)
        order = torch.arange(first, first + len(logits))
        self._summarise(logits, flat_ious, (order // per_point).tolist(), (order % per_point).tolist())
        self.trace.seconds += time.perf_counter() - start

    def _summarise(self, logits: torch.Tensor, ious: torch.Tensor, point_rows: list[int], outputs: list[int]) -> None:
        settings, batch = self.trace.settings, self.batch
        threshold, offset = settings.mask_threshold, settings.stability_score_offset
        x0, y0, _, _ = batch["crop_box"]
        height, width = self.trace.image_hw
        crop_points = torch.as_tensor(batch["points"], dtype=self.points_dtype)
        image_points = crop_points + torch.tensor([x0, y0], dtype=self.points_dtype)  # as ``uncrop_points``
        stability = calculate_stability_score(logits, threshold, offset)
        low, high = stability_range(logits, threshold, offset)
        reachable = torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        if settings.pred_iou_thresh > 0.0:
            reachable &= ious > settings.pred_iou_thresh - SCORE_ROUNDING
        if settings.stability_score_thresh > 0.0:
            reachable &= high >= settings.stability_score_thresh - SCORE_ROUNDING
        for index in range(len(logits)):
            common = {
                "crop_box": batch["crop_box"],
                "point_xy": tuple(image_points[point_rows[index]].tolist()),
                "output": outputs[index],
                "predicted_iou": float(ious[index]),
                "stability_score": float(stability[index]),
                "stability_bounds": (float(low[index]), float(high[index])),
            }
            if not reachable[index]:
                self.trace.candidates.append(Candidate(**common, reachable=False))
                continue
            mask = logits[index] > threshold  # [h, w] over the crop
            band = rounding_band(logits[index], threshold)
            rows, cols = band.nonzero(as_tuple=True)
            full = np.zeros((height, width), dtype=bool)
            full[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask.cpu().numpy()
            rle = encode_rle(full)
            boxes = batched_mask_to_box(torch.stack([mask & ~band, mask | band])).tolist()
            self.trace.candidates.append(
                Candidate(
                    **common,
                    reachable=True,
                    mask_rle=rle,
                    band=((rows + y0) * width + cols + x0).cpu().numpy().astype(np.int64),
                    box_without_band=_uncrop(boxes[0], x0, y0),
                    box_with_band=_uncrop(boxes[1], x0, y0),
                )
            )


def _uncrop(box: list[int], x0: int, y0: int) -> Box:
    if box == [0, 0, 0, 0]:  # an empty mask's box stays [0, 0, 0, 0], as the reference keeps it
        return (0, 0, 0, 0)
    return (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)


@contextmanager
def record_reference(generator: Any) -> Iterator[ReferenceTrace]:
    """Record the candidates of ``generator`` (a ``SamAutomaticMaskGenerator`` or
    ``SAM2AutomaticMaskGenerator``) while it generates the masks of one image inside the block.

        with record_reference(reference) as trace:
            records = reference.generate(image)
    """
    trace = ReferenceTrace(GeneratorSettings.of(generator))
    predictor = generator.predictor
    is_sam2 = hasattr(predictor, "_predict")
    recorder = _Recorder(trace, torch.float32 if is_sam2 else torch.float64)  # the dtype its records carry
    predict_name = "_predict" if is_sam2 else "predict_torch"
    predict, process_batch = getattr(predictor, predict_name), generator._process_batch

    def traced_predict(*args: Any, **kwargs: Any) -> Any:
        masks, ious, low_res = predict(*args, **kwargs)
        recorder.observe(masks, ious, refinement=kwargs.get("mask_input") is not None)
        return masks, ious, low_res

    def traced_batch(points: np.ndarray, im_size: Any, crop_box: list[int], orig_size: Any, **kwargs: Any) -> Any:
        recorder.begin_batch(np.asarray(points), crop_box, orig_size)
        try:
            return process_batch(points, im_size, crop_box, orig_size, **kwargs)
        finally:
            recorder.batch = None

    setattr(predictor, predict_name, traced_predict)  # instance attributes shadow the methods
    generator._process_batch = traced_batch
    try:
        yield trace
    finally:
        delattr(predictor, predict_name)
        del generator._process_batch
        trace.finish()
