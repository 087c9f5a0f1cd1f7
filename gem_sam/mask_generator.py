"""Class-agnostic masks from SAM prompted with a grid of points.

Gives the masks of ``segment_anything.SamAutomaticMaskGenerator`` for the same model and settings,
with less work:

* the image encoder's attention is fused and its global attention runs a band of rows at a time
  (``sam_encoder``), which halves the peak memory of ViT-B and saves a quarter of its time on the CPU;
* the decoder keeps every prompt's image tokens as the shared embedding plus low-rank updates, so the
  per-prompt work is products with a few tokens (``sam_decoder.PointPromptDecoder``);
* the predicted-IoU filter runs before the masks are formed: mask logits are upscaled only for prompts
  with a passing mask, and only passing masks are upsampled to the image (the reference does both for
  all ``3 x points`` candidates);
* full-resolution work is done a chunk of masks at a time, which bounds memory.

Every later step (stability score, thresholds, boxes, NMS, crops, small-region cleanup) is the
reference's computation on the same full-resolution logits, so the output is the same.

Records use image pixel coordinates: ``bbox`` and ``crop_box`` are XYWH, ``point_coords`` are
[[x, y]], ``segmentation`` is a COCO RLE with ``counts`` as str.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam
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
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms, box_area

from .devices import autocast
from .mask_ops import masks_per_chunk
from .sam_decoder import PointPromptDecoder
from .sam_encoder import encode_image
from .sam_model import load_sam
from .stage_times import StageTimes

UPSCALE_CHUNK = 16  # prompts whose low-resolution mask logits are formed at a time


@dataclass(frozen=True)
class MaskGeneratorConfig:
    """Settings of the grid-point generator; names and defaults of ``SamAutomaticMaskGenerator``.

    Each field's ``help`` metadata is also the help of its command-line flag.
    """

    points_per_side: int = field(
        default=32, metadata={"help": "grid points along each image side (points_per_side**2 prompts)"}
    )
    points_per_batch: int = field(
        default=64, metadata={"help": "prompts decoded together (memory vs speed; masks do not change)"}
    )
    pred_iou_thresh: float = field(default=0.88, metadata={"help": "keep masks whose predicted IoU is above this"})
    stability_score_thresh: float = field(
        default=0.95, metadata={"help": "keep masks whose stability score is at least this"}
    )
    stability_score_offset: float = field(default=1.0, metadata={"help": "logit offset for the stability score"})
    box_nms_thresh: float = field(default=0.7, metadata={"help": "box IoU for NMS within a crop"})
    crop_n_layers: int = field(
        default=0, metadata={"help": "extra layers of image crops (layer i has (2**i)**2 crops)"}
    )
    crop_nms_thresh: float = field(default=0.7, metadata={"help": "box IoU for NMS between crops"})
    crop_overlap_ratio: float = field(
        default=512 / 1500, metadata={"help": "overlap of first-layer crops, fraction of the short side"}
    )
    crop_n_points_downscale_factor: int = field(
        default=1, metadata={"help": "points per side divided by this per crop layer"}
    )
    min_mask_region_area: int = field(
        default=0, metadata={"help": "remove holes and islands smaller than this (pixels); 0: off"}
    )
    precision: str = field(default="fp32", metadata={"help": "fp32 | bf16 | fp16 autocast for the SAM networks (GPU)"})
    compile: bool = field(
        default=False,
        metadata={
            "help": "compile the image encoder with torch.compile (the first image is slower; masks do not change)"
        },
    )

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        require(self.points_per_side >= 1, f"points_per_side={self.points_per_side} must be at least 1")
        require(self.points_per_batch >= 1, f"points_per_batch={self.points_per_batch} must be at least 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"{name}={value} must lie in [0, 1]")
        require(self.stability_score_offset > 0, f"stability_score_offset={self.stability_score_offset} must be > 0")
        require(self.crop_n_layers >= 0, f"crop_n_layers={self.crop_n_layers} must be 0 or more")
        require(
            0.0 <= self.crop_overlap_ratio < 1.0, f"crop_overlap_ratio={self.crop_overlap_ratio} must lie in [0, 1)"
        )
        require(
            self.crop_n_points_downscale_factor >= 1,
            f"crop_n_points_downscale_factor={self.crop_n_points_downscale_factor} must be at least 1",
        )
        require(self.min_mask_region_area >= 0, f"min_mask_region_area={self.min_mask_region_area} must be 0 or more")
        require(
            self.precision in ("fp32", "bf16", "fp16"),
            f"precision={self.precision!r} is not supported; choose fp32, bf16 or fp16",
        )

    def reference_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``SamAutomaticMaskGenerator`` with the same settings."""
        kwargs = asdict(self)
        del kwargs["precision"], kwargs["compile"]
        return kwargs


class GridMaskGenerator:
    """Grid-point automatic mask generation; ``generate`` matches the reference generator."""

    def __init__(self, sam: Sam, *, config: MaskGeneratorConfig) -> None:
        self.sam = sam
        self.config = config
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.features: torch.Tensor | None = None  # [1, 256, 64, 64] embedding of the current crop
        self.input_size: tuple[int, int] = (0, 0)  # the crop's size after resizing to the encoder input
        self.decoder = PointPromptDecoder(sam)
        self.encode = torch.compile(encode_image, dynamic=False) if config.compile else encode_image
        self.point_grids = build_all_layer_point_grids(
            config.points_per_side, config.crop_n_layers, config.crop_n_points_downscale_factor
        )
        self.times = StageTimes()  # per-stage profile: set ``times.enabled = True`` to collect it

    @property
    def device(self) -> torch.device:
        return self.sam.device

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
        data = MaskData()
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
        self._embed(crop)
        points = self.point_grids[layer_index] * np.array(crop_hw)[None, ::-1]  # [P, 2] x, y pixels

        data = MaskData()
        for (batch_points,) in batch_iterator(self.config.points_per_batch, points):
            data.cat(self._process_batch(batch_points, crop_hw, crop_box, orig_hw))
        self.features = None
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

    def _embed(self, crop: np.ndarray) -> None:
        """Image embedding of an HxWx3 RGB crop, as ``SamPredictor.set_image`` computes it, with the
        encoder's global attention in bands (``sam_encoder``); sets ``features`` and ``input_size``."""
        resized = self.transform.apply_image(crop)  # long side 1024
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.input_size = tuple(pixels.shape[-2:])
        with autocast(self.device, self.config.precision), self.times.stage("image encoder", self.device):
            self.features = self.encode(self.sam.image_encoder, self.sam.preprocess(pixels)).float()

    def _decode(self, points_xy: np.ndarray, crop_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted IoUs [P*3] of every mask, and low-resolution logits [K, 256, 256] of the K masks
        whose predicted IoU passes the filter (in the same point-major order)."""
        coords = self.transform.apply_coords(points_xy, crop_hw)
        coords = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
        with autocast(self.device, self.config.precision):
            with self.times.stage("decoder transformer + IoU head", self.device):
                tokens, image_tokens = self.decoder.transform(self.features, coords)
                iou_preds = self.decoder.iou_predictions(tokens).float()  # [P, 3]
            passes = (
                iou_preds > self.config.pred_iou_thresh
                if self.config.pred_iou_thresh > 0.0
                else (torch.ones_like(iou_preds, dtype=torch.bool))
            )
            # Only prompts with a passing mask need the upscaled mask logits.
            needed = passes.any(dim=1).nonzero()[:, 0]
            with self.times.stage("mask logits of passing prompts (256x256)", self.device):
                low_res = [
                    self.decoder.mask_logits(tokens[chunk], image_tokens, chunk).float()[passes[chunk]]
                    for chunk in needed.split(UPSCALE_CHUNK)
                ]
        if not low_res:
            return iou_preds.flatten(), torch.zeros(0, 256, 256, device=self.device)
        return iou_preds.flatten(), torch.cat(low_res)

    def _process_batch(
        self, points_xy: np.ndarray, crop_hw: tuple[int, int], crop_box: list[int], orig_hw: tuple[int, int]
    ) -> MaskData:
        config = self.config
        threshold = self.sam.mask_threshold
        iou_preds, low_res = self._decode(points_xy, crop_hw)
        points = torch.as_tensor(points_xy.repeat(3, axis=0), device=self.device)  # [P*3, 2], mask order
        if config.pred_iou_thresh > 0.0:
            passes = iou_preds > config.pred_iou_thresh
            iou_preds, points = iou_preds[passes], points[passes]

        # Full-resolution logits of the survivors only, a chunk at a time, as the reference computes
        # them; only the run-length encodings of the masks that pass every filter are kept.
        data = _empty_mask_data()
        for indexes in torch.arange(len(low_res), device=self.device).split(masks_per_chunk(crop_hw)):
            with self.times.stage("upsampling to the image", self.device):
                logits = self.sam.postprocess_masks(low_res[indexes, None], self.input_size, crop_hw)[:, 0]  # [m, h, w]
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
                MaskData(
                    rles=rles,
                    boxes=boxes.cpu(),
                    iou_preds=iou_preds[indexes].cpu(),
                    points=points[indexes].cpu(),
                    stability_score=stability.cpu(),
                )
            )
        return data


def _empty_mask_data() -> MaskData:
    """Mask data with no masks: uncompressed RLEs, XYXY boxes, scores and float64 point coordinates."""
    return MaskData(
        rles=[],
        boxes=torch.zeros(0, 4),
        iou_preds=torch.zeros(0),
        points=torch.zeros(0, 2, dtype=torch.float64),
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
    """SAM ``model_type`` (vit_b | vit_l | vit_h) from ``checkpoint`` with generator ``settings``.

    ``settings`` take the keyword names of ``SamAutomaticMaskGenerator`` (``points_per_side``,
    ``pred_iou_thresh``, ...) plus ``precision`` and ``compile``; unknown names are an error.
    """
    known = MaskGeneratorConfig.__dataclass_fields__
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise TypeError(f"unknown mask generator setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    config = MaskGeneratorConfig(**settings)
    sam = load_sam(model_type=model_type, checkpoint=checkpoint, device=device)
    return GridMaskGenerator(sam, config=config)
