"""What differs between the SAM families around the shared decoder: image input, prompt frame,
upsampling and the choice of mask outputs.

* SAM 1 resizes the long side to 1024 and pads; prompts follow the resize; masks go back through the
  padded 1024 frame (``Sam.postprocess_masks``). Every point gives the three multimask outputs.
* SAM 2 resizes to 1024x1024 (``SAM2Transforms``), its encoder also gives two high-resolution maps
  that the decoder's upscaling adds, masks are resized straight to the crop, and ``multimask_output=False``
  gives one mask per point: the single-mask output, or where that is unstable, the best multimask output.
  ``use_m2m`` refines each mask with its own low-resolution logits as a mask prompt.

Each adapter reuses its package's own preprocessing and post-processing, so images, prompts and masks
are the reference's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from ..devices import autocast
from .config import MaskGeneratorConfig
from .point_decoder import ALL_OUTPUTS, MULTIMASK_OUTPUTS, PointPromptDecoder
from .sam1_encoder import encode_image
from .stability_bounds import Sources, bilinear_sources

EMBEDDING_SIDE = 64  # tokens per side of the 1024-pixel input's image embedding (both families)


@dataclass(frozen=True)
class ImageFeatures:
    """A crop's encoding: the [1, C, 64, 64] embedding and what the decoder's upscaling adds
    (``PointPromptDecoder.upscaling_shifts``)."""

    embedding: torch.Tensor
    shifts: tuple[torch.Tensor, torch.Tensor]


class Sam1Adapter:
    """SAM 1 (``segment_anything.Sam``): ViT encoder in bands (``sam1_encoder``), three masks per point."""

    point_dtype = torch.float64  # the reference records points as float64
    output_mode = "multimask"

    def __init__(self, sam: Sam, *, config: MaskGeneratorConfig) -> None:
        self.model = sam
        self.config = config
        self.decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder)
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.encode = torch.compile(encode_image, dynamic=False) if config.compile else encode_image
        self.mask_threshold = sam.mask_threshold
        self.input_size: tuple[int, int] = (0, 0)  # the current crop's size after resizing to the encoder input

    @property
    def device(self) -> torch.device:
        return self.model.device

    def embed(self, crop: np.ndarray) -> ImageFeatures:
        """Encoding of an HxWx3 RGB crop, as ``SamPredictor.set_image`` computes it."""
        resized = self.transform.apply_image(crop)  # long side 1024
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.input_size = tuple(pixels.shape[-2:])
        with autocast(self.device, self.config.precision):
            embedding = self.encode(self.model.image_encoder, self.model.preprocess(pixels)).float()
        return ImageFeatures(embedding, self.decoder.upscaling_shifts(None, side=EMBEDDING_SIDE))

    def prompt_coords(self, points_xy: np.ndarray, crop_hw: tuple[int, int]) -> torch.Tensor:
        """[P, 2] (x, y) crop pixels -> [P, 2] float32 in the encoder's input frame."""
        coords = self.transform.apply_coords(points_xy, crop_hw)
        return torch.as_tensor(coords, dtype=torch.float32, device=self.device)

    def low_res_extent(self) -> tuple[int, int]:
        """The top-left rows and columns of the 256x256 low-resolution logits that ``upsample`` reads for
        the current crop; the rest lies in the padding of the encoder's square input."""
        side, low_res_side = self.model.image_encoder.img_size, 4 * EMBEDDING_SIDE
        return tuple(bilinear_reach(size, source=low_res_side, target=side) for size in self.input_size)

    def resize_sources(self, crop_hw: tuple[int, int]) -> tuple[Sources, Sources]:
        """The low-resolution rows and columns that each of the crop's rows and columns reads in
        ``upsample``: through the 4x resize, cut to the resized crop, then the resize to the crop."""
        low_res_side = 4 * EMBEDDING_SIDE
        frame_side = self.model.image_encoder.img_size
        extent = self.low_res_extent()
        sources = []
        for size, frame_size, reach in zip(crop_hw, self.input_size, extent, strict=True):
            four_x = bilinear_sources(low_res_side, frame_side, scale=low_res_side / frame_side).cut(frame_size)
            # the rows past ``reach`` are never read (``bilinear_reach``)
            four_x = Sources(np.minimum(four_x.first, reach - 1), np.minimum(four_x.last, reach - 1))
            sources.append(four_x.then(bilinear_sources(frame_size, size)))
        return sources[0], sources[1]

    def upsample(self, low_res: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
        """[m, h, w] logits covering at least ``low_res_extent`` of the 256x256 frame -> [m, H, W] logits
        over the crop, as ``Sam.postprocess_masks``: resized 4x to the 1024 frame, cut to the resized
        crop, resized to the crop. The 4x resize reads the same source rows whether or not the unread
        padding rows are there, so the values are the same."""
        scale = self.model.image_encoder.img_size / (4 * EMBEDDING_SIDE)
        frame = F.interpolate(low_res[:, None], scale_factor=scale, mode="bilinear", align_corners=False)
        frame = frame[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(frame, crop_hw, mode="bilinear", align_corners=False)[:, 0]


class Sam2Adapter:
    """SAM 2 / 2.1 (``sam2.modeling.sam2_base.SAM2Base``) through ``SAM2ImagePredictor``'s encoding."""

    point_dtype = torch.float32  # the reference records points as float32

    def __init__(self, model: torch.nn.Module, *, config: MaskGeneratorConfig) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.model = model
        self.config = config
        self.decoder = PointPromptDecoder(model.sam_prompt_encoder, model.sam_mask_decoder)
        # As the reference generator builds it: holes and sprinkles up to min_mask_region_area are
        # cleaned on the low-resolution masks where sam2's optional extension is available.
        with warnings.catch_warnings():  # SAM2Transforms scripts its resize; torch deprecates scripting
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            self.predictor = SAM2ImagePredictor(
                model, max_hole_area=config.min_mask_region_area, max_sprinkle_area=config.min_mask_region_area
            )
        self.predictor._bb_feat_sizes = backbone_feature_sizes(model.image_size)
        self.mask_threshold = config.mask_threshold
        if config.multimask_output:
            self.output_mode = "multimask"
        elif model.sam_mask_decoder.dynamic_multimask_via_stability:
            self.output_mode = "dynamic"
        else:
            self.output_mode = "single"

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def embed(self, crop: np.ndarray) -> ImageFeatures:
        """Encoding of an HxWx3 RGB crop by ``SAM2ImagePredictor.set_image``."""
        with autocast(self.device, self.config.precision):
            self.predictor.set_image(np.array(crop))  # a writable copy: torchvision warns on read-only arrays
        features = self.predictor._features
        high_res = [feature.float() for feature in features["high_res_feats"]]
        use_high_res = self.model.sam_mask_decoder.use_high_res_features
        side = features["image_embed"].shape[-1]  # 64 at the configs' 1024-pixel input
        return ImageFeatures(
            features["image_embed"].float(),
            self.decoder.upscaling_shifts(high_res if use_high_res else None, side=side),
        )

    def prompt_coords(self, points_xy: np.ndarray, crop_hw: tuple[int, int]) -> torch.Tensor:
        """[P, 2] (x, y) crop pixels -> [P, 2] float32 in the model's 1024x1024 input frame."""
        points = torch.as_tensor(points_xy, dtype=torch.float32, device=self.device)
        return self.predictor._transforms.transform_coords(points, normalize=True, orig_hw=crop_hw)

    def low_res_extent(self) -> None:
        """SAM 2 resizes the whole 256x256 low-resolution logits to the crop: all of them are read."""
        return None

    def resize_sources(self, crop_hw: tuple[int, int]) -> tuple[Sources, Sources] | None:
        """The low-resolution rows and columns that each of the crop's rows and columns reads in
        ``upsample`` (one resize of the 256x256 logits to the crop); None where the post-processing also
        fills holes and removes sprinkles first (``min_mask_region_area`` > 0 with sam2's extension)."""
        transforms = self.predictor._transforms
        if transforms.max_hole_area > 0 or transforms.max_sprinkle_area > 0:
            return None
        low_res_side = self.model.image_size // 4  # the decoder's logits: 4x the embedding's side
        return bilinear_sources(low_res_side, crop_hw[0]), bilinear_sources(low_res_side, crop_hw[1])

    def upsample(self, low_res: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
        """[m, 256, 256] logits -> [m, h, w] logits over the crop (``SAM2Transforms.postprocess_masks``)."""
        return self.predictor._transforms.postprocess_masks(low_res[:, None], crop_hw)[:, 0]

    def refine_with_m2m(self, coords: torch.Tensor, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One more decoding of each mask, prompted with its point and its own logits (``use_m2m``).

        coords [n, 2] in the input frame, low_res [n, 256, 256] -> refined logits [n, 256, 256] and
        predicted IoUs [n]. A mask prompt changes every image token of its prompt, so the low-rank
        decoder does not apply: this is the model's own decoder, ``points_per_batch`` masks at a time,
        without the reference's upsampling of every mask to the image.
        """
        prompt_encoder, mask_decoder = self.model.sam_prompt_encoder, self.model.sam_mask_decoder
        features = self.predictor._features
        high_res = features["high_res_feats"] if mask_decoder.use_high_res_features else None
        refined, ious = [], []
        batch = self.config.points_per_batch
        with autocast(self.device, self.config.precision):
            for start in range(0, len(coords), batch):
                points = coords[start : start + batch, None]
                labels = torch.ones(points.shape[:2], dtype=torch.int, device=points.device)
                masks = low_res[start : start + batch, None].clamp(-32.0, 32.0)
                sparse, dense = prompt_encoder(points=(points, labels), boxes=None, masks=masks)
                logits, iou, _, _ = mask_decoder(
                    image_embeddings=features["image_embed"][-1:],
                    image_pe=prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                    repeat_image=True,
                    high_res_features=high_res,
                )
                refined.append(logits[:, 0].float())
                ious.append(iou[:, 0].float())
        return torch.cat(refined), torch.cat(ious)

    def unstable_single_masks(self, logits: torch.Tensor) -> torch.Tensor:
        """[S, 256, 256] single-mask logits -> [S] bool: where the decoder falls back to a multimask
        output (its stability at +-``dynamic_multimask_stability_delta`` is below the threshold)."""
        decoder = self.model.sam_mask_decoder
        return decoder._get_stability_scores(logits) < decoder.dynamic_multimask_stability_thresh


def backbone_feature_sizes(image_size: int) -> list[tuple[int, int]]:
    """The sides of SAM 2's three backbone feature maps (strides 4, 8, 16) for a square input of
    ``image_size``: ``SAM2ImagePredictor`` writes them down for 1024 (256, 128, 64); models built with
    another ``image_size`` (fast tests) need them too."""
    return [(image_size // stride, image_size // stride) for stride in (4, 8, 16)]


def bilinear_reach(rows: int, *, source: int, target: int) -> int:
    """How many leading rows of a ``source``-row map a bilinear resize to ``target`` rows
    (``align_corners=False``) reads to give its first ``rows`` output rows. The same holds for columns."""
    last = (rows - 0.5) * source / target - 0.5  # source position of the last output row
    return min(source, math.floor(max(last, 0.0)) + 2)


# The mask outputs that each output mode may give (``output_candidates``), for ``PointPromptDecoder.transform``.
OUTPUTS_OF_MODE = {"multimask": MULTIMASK_OUTPUTS, "single": (0,), "dynamic": ALL_OUTPUTS}


def output_candidates(mode: str, ious: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask outputs each point may give and their predicted IoUs.

    ious: [P, 4] of the single-mask output 0 and the multimask outputs 1-3. Returns outputs [P, K] and
    their IoUs [P, K]: multimask (K = 3): outputs 1-3; single (K = 1): output 0; dynamic (K = 2):
    output 0 and the multimask output with the highest IoU (first of ties), of which the stability of
    output 0 later picks one.
    """
    points = ious.shape[0]
    if mode == "multimask":
        outputs = torch.tensor(MULTIMASK_OUTPUTS, device=ious.device).expand(points, -1)
    elif mode == "single":
        outputs = torch.zeros(points, 1, dtype=torch.long, device=ious.device)
    elif mode == "dynamic":
        best = 1 + ious[:, 1:].argmax(dim=1)
        outputs = torch.stack([torch.zeros_like(best), best], dim=1)
    else:
        raise ValueError(f"unknown output mode {mode!r}; one of multimask, single, dynamic")
    return outputs, ious.gather(1, outputs)
