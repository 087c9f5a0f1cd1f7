"""Per-pixel predictions for the dense benchmarks (the paper's section 4.1 protocol).

1. The image is resized so its shorter side is the scorer's ``short_side`` (448), bicubic (the
   scorer's preprocessing, long side capped at ``max_long_side``).
2. Sliding windows of ``window`` x ``window`` pixels (448) every ``stride`` pixels (224) cover it, as
   in mmsegmentation's "slide" inference that the training-free code bases use; the last window in
   each direction is aligned with the image's edge, and a side shorter than the window is one window.
   Each window's patch similarities are upsampled bilinearly to the window; overlapping windows are
   averaged.
3. The map is upsampled bilinearly to the label's size, and each pixel takes the class of highest
   similarity. With a background class (VOC), a pixel is background where no class's probability
   (softmax over the classes of similarity x the model's logit scale, 100 for CLIP) reaches the
   threshold (0.85).

``gem-sam`` (rule ``label``, as in the point evaluation): every SAM mask takes the class whose mean
similarity inside it is highest (background when its probability is below the threshold, for VOC);
a pixel takes the class of the smallest mask covering it (parts over wholes); a pixel no mask covers
is predicted as background (VOC) or as no class (a miss, for datasets without background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..mask_ops import decoded_mask_chunks
from ..naming.scorer import GemScorer
from ..naming.vocabulary import Vocabulary, as_vocabulary, class_similarity
from ..sam import GridMaskGenerator
from .confusion import NO_PREDICTION


@dataclass(frozen=True)
class SlidingWindow:
    """Window and stride of sliding-window inference, in pixels of the resized image."""

    window: int = 448  # window side
    stride: int = 224  # step between windows

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 1:
            raise ValueError(f"window={self.window} and stride={self.stride} must be positive")
        if self.stride > self.window:
            raise ValueError(f"stride={self.stride} larger than window={self.window} would leave gaps")

    def on_patch_grid(self, patch: int) -> SlidingWindow:
        """The window and stride that run: rounded down to multiples of the ViT's patch (at least one
        patch), so that windows cut the input between patches."""
        window = max(patch, self.window // patch * patch)
        return SlidingWindow(window=window, stride=max(patch, min(window, self.stride // patch * patch)))


def window_starts(length: int, *, window: int, stride: int) -> list[int]:
    """Start offsets of windows along one side (mmsegmentation's slide grid): every ``stride``, the
    last one moved back to end at the edge; one window at 0 when the side is not longer than it."""
    if length <= window:
        return [0]
    count = (length - window + stride - 1) // stride + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


def windowed_similarity(
    scorer: GemScorer, images: torch.Tensor, text: torch.Tensor, *, slide: SlidingWindow
) -> torch.Tensor:
    """images: [1, 3, H, W] preprocessed; returns [C, H, W] similarity at the input's resolution,
    averaged over the windows that cover each pixel."""
    _, _, height, width = images.shape
    ran = slide.on_patch_grid(scorer.patch_size)
    window, stride = ran.window, ran.stride
    total = torch.zeros(text.shape[0], height, width, device=scorer.device)
    count = torch.zeros(1, height, width, device=scorer.device)
    for top in window_starts(height, window=window, stride=stride):
        for left in window_starts(width, window=window, stride=stride):
            crop = images[:, :, top : top + window, left : left + window]
            size = tuple(crop.shape[-2:])
            similarity = scorer.patch_similarity(crop, text)  # [1, C, h/p, w/p]
            total[:, top : top + size[0], left : left + size[1]] += F.interpolate(
                similarity, size=size, mode="bilinear", align_corners=False
            )[0]
            count[:, top : top + size[0], left : left + size[1]] += 1
    return total / count


def classes_from_similarity(
    similarity: torch.Tensor,
    *,
    logit_scale: float,
    background_threshold: float | None,
    background_prompts: bool = False,
) -> torch.Tensor:
    """similarity: [G, ...] class similarities -> classes [...] (int64): the argmax. With
    ``background_prompts`` the last row is the background prompts' similarity, and where it wins the
    pixel is background. With ``background_threshold`` (VOC) the classes shift by one and background is
    class 0, which also wins where the highest softmax probability is below the threshold; without it a
    pixel the background wins is ``NO_PREDICTION``."""
    best = similarity.argmax(dim=0)
    won_by_background = (
        best == similarity.shape[0] - 1 if background_prompts else torch.zeros_like(best, dtype=torch.bool)
    )
    if background_threshold is None:
        return torch.where(won_by_background, NO_PREDICTION, best)
    probability = (similarity * logit_scale).softmax(dim=0).max(dim=0).values
    return torch.where((probability < background_threshold) | won_by_background, 0, best + 1)


class DensePredictor:
    """Predicts a class per pixel for one image of a dense benchmark."""

    def __init__(
        self,
        *,
        scorer: GemScorer,
        vocabulary: Vocabulary | Sequence[str],
        background_threshold: float | None,
        slide: SlidingWindow = SlidingWindow(),
        mask_generator: GridMaskGenerator | None = None,
    ) -> None:
        self.scorer = scorer
        self.vocabulary = as_vocabulary(vocabulary)
        self.text = scorer.encode_text(self.vocabulary.all_prompts)  # [P, E], once per run
        self.background_threshold = background_threshold
        self.slide = slide
        self.mask_generator = mask_generator

    @torch.no_grad()
    def similarity(self, image_rgb: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
        """[G, H, W] class similarity at ``size_hw`` (the label's size): per class the maximum over its
        prompts, then (with background prompts) the background's."""
        images = self.scorer.preprocess(image_rgb)
        windows = windowed_similarity(self.scorer, images, self.text, slide=self.slide)  # [P, h, w]
        prompts = F.interpolate(windows[None], size=size_hw, mode="bilinear", align_corners=False)[0]  # [P, H, W]
        if self.vocabulary.is_flat:
            return prompts
        groups = len(self.vocabulary.classes) + int(bool(self.vocabulary.background))
        flat = class_similarity(prompts.flatten(1).T, self.vocabulary.prompt_class, groups)  # [H*W, G]
        return flat.T.reshape(groups, *size_hw)

    @torch.no_grad()
    def predict(self, image_rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """[H, W] int64 classes (0..K-1, or ``NO_PREDICTION``) at ``size_hw``."""
        similarity = self.similarity(image_rgb, size_hw)
        classify = {
            "logit_scale": self.scorer.logit_scale,
            "background_threshold": self.background_threshold,
            "background_prompts": bool(self.vocabulary.background),
        }
        if self.mask_generator is None:
            return classes_from_similarity(similarity, **classify).cpu().numpy()
        if tuple(image_rgb.shape[:2]) != tuple(size_hw):
            raise ValueError(f"image {image_rgb.shape[:2]} and labels {size_hw} differ in size")
        uncovered = 0 if self.background_threshold is not None else NO_PREDICTION
        out = np.full(size_hw, uncovered, dtype=np.int64)
        best_area = np.full(size_hw, np.iinfo(np.int64).max)
        records = self.mask_generator.generate(image_rgb)
        flat = similarity.flatten(1)  # [C, H*W]
        for chunk, masks in decoded_mask_chunks(records, size_hw=size_hw):
            masks_on_device = masks.flatten(1).to(flat.device, flat.dtype)  # [m, H*W]
            means = masks_on_device @ flat.T / masks_on_device.sum(dim=1, keepdim=True).clamp(min=1)  # [m, C]
            mask_classes = classes_from_similarity(means.T, **classify).cpu().numpy()  # [m]
            for mask, mask_class, record in zip(masks.numpy(), mask_classes, chunk, strict=True):
                smaller = mask & (record["area"] < best_area)
                out[smaller] = mask_class
                best_area[smaller] = record["area"]
        return out
