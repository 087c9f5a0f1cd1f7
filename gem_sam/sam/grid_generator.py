"""Class-agnostic masks from SAM 1 or SAM 2 prompted with a grid of points.

Gives the masks of ``segment_anything.SamAutomaticMaskGenerator`` (SAM 1) or
``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`` (SAM 2 / 2.1) for the same model and
settings, with less work:

* the decoder keeps every prompt's image tokens as the shared embedding plus low-rank updates, so the
  per-prompt work is products with a few tokens (``point_decoder.PointPromptDecoder``);
* the predicted-IoU filter runs before the masks are formed: mask logits are upscaled only for prompts
  with a passing mask, and only passing masks are upsampled to the image (the references do both for
  every candidate); for SAM 1 only the part of the low-resolution frame that the upsampling reads is
  formed (the rest is the padding of a non-square image's square input);
* a mask whose stability score cannot reach ``stability_score_thresh`` is dropped before it is
  upsampled: bounds on its full-resolution logits follow from the windows of low-resolution logits that
  the bilinear resizes read (``stability_bounds``);
* full-resolution work is done a chunk of masks at a time, which bounds memory;
* SAM 1's image encoder runs with fused attention, its global attention a band of rows at a time
  (``sam1_encoder``), which halves the peak memory of ViT-B and saves a quarter of its time on the CPU.
  SAM 2's Hiera encoder is the model's own: its attention is windowed in the early stages and already
  uses ``scaled_dot_product_attention``, so the same change would not pay.

What does not carry over to SAM 2: ``use_m2m`` prompts each mask with its own logits, which changes
every image token of the prompt, so the refinement runs the model's own decoder on all candidates (as
the reference does) and only the upsampling is left to the survivors. With ``multimask_output=False``
the single-mask output's stability decides between two outputs, so those prompts need their
low-resolution logits whenever either output could pass the IoU filter.

Every later step (stability score, thresholds, boxes, NMS, crops, small-region cleanup) is the
reference's computation on the same full-resolution logits, so the output is the same. The two
references' ``amg`` utilities are the same code; the SAM 1 package's are used for both.

Records use image pixel coordinates: ``bbox`` and ``crop_box`` are XYWH, ``point_coords`` are
[[x, y]], ``segmentation`` is a COCO RLE with ``counts`` as str.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import (
    MaskData,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from torchvision.ops.boxes import batched_nms, box_area

from ..devices import autocast
from ..mask_ops import masks_per_chunk
from .adapters import OUTPUTS_OF_MODE, ImageFeatures, Sam1Adapter, Sam2Adapter, output_candidates
from .config import MaskGeneratorConfig, Sam2GeneratorConfig, generator_config, is_sam2_model
from .sam1_model import load_sam
from .sam2_model import load_sam2
from .stability_bounds import may_pass_stability
from .stage_times import StageTimes

UPSCALE_CHUNK = 16  # prompts whose low-resolution mask logits are formed at a time


class MaskRecords(MaskData):
    """``MaskData`` whose ``cat`` appends list entries (the run-length encodings) without deep-copying
    them: what is appended is never changed afterwards, and the copies of noisy masks' run lengths took a
    third of the time of an image with 192 masks."""

    def cat(self, new_stats: MaskData) -> None:
        lists = {key: value for key, value in new_stats.items() if isinstance(value, list)}
        super().cat(MaskData(**{key: value for key, value in new_stats.items() if key not in lists}))
        current = dict(self.items())
        for key, value in lists.items():
            self[key] = list(value) if current.get(key) is None else current[key] + value


class GridMaskGenerator:
    """Grid-point automatic mask generation; ``generate`` matches the family's reference generator.

    model: a SAM 1 ``Sam`` or a SAM 2 ``SAM2Base``; config: ``MaskGeneratorConfig`` for SAM 1,
    ``Sam2GeneratorConfig`` for SAM 2 (its ``compile`` is applied by ``build_mask_generator``).
    """

    def __init__(self, model: torch.nn.Module, *, config: MaskGeneratorConfig) -> None:
        is_sam2 = hasattr(model, "sam_mask_decoder")
        if is_sam2 != isinstance(config, Sam2GeneratorConfig):
            wanted = "Sam2GeneratorConfig" if is_sam2 else "MaskGeneratorConfig"
            raise TypeError(f"a {'SAM 2' if is_sam2 else 'SAM 1'} model takes a {wanted}, got {type(config).__name__}")
        self.model = model
        self.config = config
        self.adapter = Sam2Adapter(model, config=config) if is_sam2 else Sam1Adapter(model, config=config)
        self.decoder = self.adapter.decoder
        self.point_grids = build_all_layer_point_grids(
            config.points_per_side, config.crop_n_layers, config.crop_n_points_downscale_factor
        )
        self.times = StageTimes()  # per-stage profile: set ``times.enabled = True`` to collect it

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """image: HxWx3 uint8 RGB. Returns one record per mask (see the module docstring)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} {image.dtype}")
        data = self._generate_masks(image)
        if self.config.min_mask_region_area > 0 and len(data["rles"]):
            with self.times.stage("small-region removal"):
                data = SamAutomaticMaskGenerator.postprocess_small_regions(
                    data,
                    self.config.min_mask_region_area,
                    max(self.config.box_nms_thresh, self.config.crop_nms_thresh),
                )
        with self.times.stage("records (COCO RLE)"):
            return self._records(data)

    @staticmethod
    def _records(data: MaskData) -> list[dict[str, Any]]:
        return [
            {
                "segmentation": _coco_rle(rle),
                "area": int(sum(rle["counts"][1::2])),
                "bbox": box_xyxy_to_xywh(torch.as_tensor(data["boxes"][i])).tolist(),
                "predicted_iou": float(data["iou_preds"][i]),
                "point_coords": [np.asarray(data["points"][i]).tolist()],
                "stability_score": float(data["stability_score"][i]),
                "crop_box": box_xyxy_to_xywh(torch.as_tensor(data["crop_boxes"][i])).tolist(),
            }
            for i, rle in enumerate(data["rles"])
        ]

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_hw = image.shape[:2]
        crop_boxes, layer_indexes = generate_crop_boxes(
            orig_hw, self.config.crop_n_layers, self.config.crop_overlap_ratio
        )
        data = MaskRecords()
        for crop_box, layer_index in zip(crop_boxes, layer_indexes, strict=True):
            data.cat(self._process_crop(image, crop_box, layer_index, orig_hw))
        if len(crop_boxes) > 1 and len(data["rles"]):
            # Between crops, prefer masks from smaller crops.
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(),
                scores.to(data["boxes"].device),
                torch.zeros(len(data["boxes"])),
                iou_threshold=self.config.crop_nms_thresh,
            )
            data.filter(keep)
        data.to_numpy()
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer_index: int, orig_hw: tuple[int, int]
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_hw = crop.shape[:2]
        with self.times.stage("image encoder", self.device):
            features = self.adapter.embed(crop)
        points = self.point_grids[layer_index] * np.array(crop_hw)[None, ::-1]  # [P, 2] x, y pixels

        data = MaskRecords()
        for (batch_points,) in batch_iterator(self.config.points_per_batch, points):
            data.cat(self._process_batch(features, batch_points, crop_hw, crop_box, orig_hw))
        if not len(data["rles"]):
            data["crop_boxes"] = torch.zeros(0, 4, dtype=torch.int64)
            return data

        with self.times.stage("box NMS"):
            return self._nms_in_crop(data, crop_box)

    def _nms_in_crop(self, data: MaskData, crop_box: list[int]) -> MaskData:
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros(len(data["boxes"])),
            iou_threshold=self.config.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))])
        return data

    def _decode(self, features: ImageFeatures, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """coords [P, 2] in the model's input frame -> predicted IoUs [P, K] of every candidate mask
        (K per point: 3, or 1 for SAM 2's single-mask output), and low-resolution logits [L, h, w] (the
        part of the 256x256 frame that the upsampling reads, ``adapter.low_res_extent``) of the L
        candidates that pass the IoU filter (all of them when ``use_m2m`` refines them first), in
        point-major order."""
        config = self.config
        filtering = config.pred_iou_thresh > 0.0 and not config.use_m2m
        with autocast(self.device, config.precision):
            with self.times.stage("decoder transformer + IoU head", self.device):
                tokens, image_tokens = self.decoder.transform(
                    features.embedding, coords, mask_outputs=OUTPUTS_OF_MODE[self.adapter.output_mode]
                )
                all_ious = self.decoder.iou_predictions(tokens).float()  # [P, 4]
                outputs, ious = output_candidates(self.adapter.output_mode, all_ious)
            passes = ious > config.pred_iou_thresh if filtering else torch.ones_like(ious, dtype=torch.bool)
            # Only prompts with a candidate that can pass need the upscaled mask logits.
            needed = passes.any(dim=1).nonzero()[:, 0]
            dynamic = self.adapter.output_mode == "dynamic"
            # SAM 2's single-mask choice gives one mask per point; where no logits are formed, neither
            # candidate passes, so the placeholder IoU fails the filter too.
            chosen_ious = ious[:, 1:].clone() if dynamic else ious
            low_res = []
            extent_hw = self.adapter.low_res_extent()
            with self.times.stage("mask logits of passing prompts", self.device):
                for chunk in needed.split(UPSCALE_CHUNK):
                    logits = self.decoder.mask_logits(
                        tokens[chunk],
                        image_tokens,
                        chunk,
                        outputs=outputs[chunk],
                        shifts=features.shifts,
                        extent_hw=extent_hw,
                    )  # [S, K, h, w]
                    if dynamic:
                        logits, chosen_ious[chunk] = self._pick_stable(logits, ious[chunk])
                    keep = chosen_ious[chunk] > config.pred_iou_thresh if filtering else slice(None)
                    low_res.append(logits[keep].reshape(-1, *logits.shape[2:]))
        if not low_res:
            return chosen_ious, torch.zeros(0, *(extent_hw or (256, 256)), device=self.device)
        return chosen_ious, torch.cat(low_res)

    def _pick_stable(self, logits: torch.Tensor, ious: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's single-mask choice: logits [S, 2, h, w] and IoUs [S, 2] of output 0 and the best
        multimask output -> the chosen logits [S, 1, h, w] and IoUs [S, 1] (output 0 where stable)."""
        pick = self.adapter.unstable_single_masks(logits[:, 0]).long()[:, None]  # [S, 1]: 0 or 1
        chosen = logits.gather(1, pick[..., None, None].expand(-1, 1, *logits.shape[2:]))
        return chosen, ious.gather(1, pick)

    def _process_batch(
        self,
        features: ImageFeatures,
        points_xy: np.ndarray,
        crop_hw: tuple[int, int],
        crop_box: list[int],
        orig_hw: tuple[int, int],
    ) -> MaskData:
        config = self.config
        threshold = self.adapter.mask_threshold
        coords = self.adapter.prompt_coords(points_xy, crop_hw)
        iou_preds, low_res = self._decode(features, coords)
        per_point = iou_preds.shape[1]
        iou_preds = iou_preds.flatten()
        points = torch.as_tensor(points_xy, dtype=self.adapter.point_dtype, device=self.device)
        points = points.repeat_interleave(per_point, dim=0)  # [P*K, 2], mask order
        if config.use_m2m:  # every candidate is refined; the IoU filter applies to the refined masks
            with self.times.stage("m2m refinement (all candidates)", self.device):
                low_res, iou_preds = self.adapter.refine_with_m2m(coords.repeat_interleave(per_point, dim=0), low_res)
        if config.pred_iou_thresh > 0.0:
            passes = iou_preds > config.pred_iou_thresh
            iou_preds, points = iou_preds[passes], points[passes]
            if config.use_m2m:
                low_res = low_res[passes]

        if config.stability_score_thresh > 0.0 and len(low_res):
            low_res, iou_preds, points = self._drop_surely_unstable(low_res, iou_preds, points, crop_hw)

        # Full-resolution logits of the survivors only, a chunk at a time, as the reference computes
        # them; only the run-length encodings of the masks that pass every filter are kept.
        data = _empty_mask_data(self.adapter.point_dtype)
        for indexes in torch.arange(len(low_res), device=self.device).split(masks_per_chunk(crop_hw)):
            with self.times.stage("upsampling to the image", self.device):
                logits = self.adapter.upsample(low_res[indexes], crop_hw)  # [m, h, w]
            with self.times.stage("stability score + filter", self.device):
                stability = calculate_stability_score(logits, threshold, config.stability_score_offset)
                if config.stability_score_thresh > 0.0:
                    keep = stability >= config.stability_score_thresh
                    logits, indexes, stability = logits[keep], indexes[keep], stability[keep]
            with self.times.stage("boxes + crop-edge filter", self.device):
                binary = logits > threshold  # [m, h, w]
                boxes = batched_mask_to_box(binary)  # [m, 4] XYXY in crop pixels
                keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
                binary, boxes, indexes, stability = binary[keep], boxes[keep], indexes[keep], stability[keep]
            with self.times.stage("run-length encoding", self.device):
                rles = mask_to_rle_pytorch(uncrop_masks(binary, crop_box, orig_hw[0], orig_hw[1]))
            data.cat(
                MaskRecords(
                    rles=rles,
                    boxes=boxes.cpu(),
                    iou_preds=iou_preds[indexes].cpu(),
                    points=points[indexes].cpu(),
                    stability_score=stability.cpu(),
                )
            )
        return data

    def _drop_surely_unstable(
        self, low_res: torch.Tensor, iou_preds: torch.Tensor, points: torch.Tensor, crop_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The masks (low-resolution logits [m, h, w], IoUs [m], points [m, 2]) whose stability score
        can reach ``stability_score_thresh``, judged from bounds on their full-resolution logits
        (``stability_bounds``), so that the others are never upsampled."""
        sources = self.adapter.resize_sources(crop_hw)
        if sources is None:
            return low_res, iou_preds, points
        with self.times.stage("stability bounds (low resolution)", self.device):
            keep = may_pass_stability(
                low_res,
                *sources,
                mask_threshold=self.adapter.mask_threshold,
                offset=self.config.stability_score_offset,
                score_threshold=self.config.stability_score_thresh,
            )
        return low_res[keep], iou_preds[keep], points[keep]


def _empty_mask_data(point_dtype: torch.dtype) -> MaskData:
    """Mask data with no masks: uncompressed RLEs, XYXY boxes, scores and point coordinates."""
    return MaskRecords(
        rles=[],
        boxes=torch.zeros(0, 4),
        iou_preds=torch.zeros(0),
        points=torch.zeros(0, 2, dtype=point_dtype),
        stability_score=torch.zeros(0),
    )


def _coco_rle(uncompressed: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE with ``counts`` as str (JSON-ready)."""
    height, width = uncompressed["size"]
    rle = mask_utils.frPyObjects(uncompressed, height, width)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def build_mask_generator(
    *,
    model_type: str = "vit_h",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    **settings: Any,
) -> GridMaskGenerator:
    """SAM ``model_type`` from ``checkpoint`` with generator ``settings``.

    model_type: vit_b | vit_l | vit_h (SAM 1), sam2.1_hiera_t|s|b+|l or sam2_hiera_t|s|b+|l (SAM 2).
    ``settings`` take the keyword names of the family's reference generator (``points_per_side``,
    ``pred_iou_thresh``, ...; SAM 2 adds ``mask_threshold``, ``use_m2m``, ``multimask_output``) plus
    ``precision`` and ``compile``; unset ones take the family's defaults, unknown names are an error.
    """
    config = generator_config(model_type, **settings)
    model = load_generator_model(model_type=model_type, checkpoint=checkpoint, device=device, config=config)
    return GridMaskGenerator(model, config=config)


def load_generator_model(
    *,
    model_type: str,
    checkpoint: str | os.PathLike | None,
    device: str | torch.device,
    config: MaskGeneratorConfig,
) -> torch.nn.Module:
    """The SAM 1 or SAM 2 model ``model_type`` for a generator with ``config``."""
    if is_sam2_model(model_type):
        return load_sam2(model_type=model_type, checkpoint=checkpoint, device=device, compile_encoder=config.compile)
    return load_sam(model_type=model_type, checkpoint=checkpoint, device=device)
