"""The GEM scorer: dense patch-text cosine similarity from an open_clip model.

Coordinates: images are [B, 3, H, W] (RGB, normalised with the model's mean and std); similarity
maps are [B, C, H / patch, W / patch] with row-major patch grids, so patch (i, j) covers pixels
rows ``i*p .. i*p + p`` and columns ``j*p .. j*p + p`` of the model input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..devices import resolve_device
from ..weights import CHECKPOINTS_README, WeightsUnavailableError
from .feature_surgery import feature_surgery
from .gem import DensePathConfig, DenseVisionEncoder
from .text import DEFAULT_TEMPLATES, encode_empty_prompt, encode_vocabulary, validate_templates

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ScorerConfig:
    """Everything that changes a scorer's similarity maps, besides the weights."""

    path: DensePathConfig = field(default_factory=DensePathConfig)  # GEM or a baseline path
    templates: tuple[str, ...] = DEFAULT_TEMPLATES  # prompts averaged per class, "{}" is the class
    short_side: int = 448  # model input: shortest image side in pixels (long side snapped to the patch)
    max_long_side: int = 1792  # cap on the input's long side (bounds tokens and attention memory)

    def __post_init__(self) -> None:
        validate_templates(self.templates)
        if self.short_side < 1:
            raise ValueError(f"short_side={self.short_side} must be a positive number of pixels")
        if self.max_long_side < self.short_side:
            raise ValueError(f"max_long_side={self.max_long_side} must be at least short_side={self.short_side} pixels")


def input_size_hw(
    image_hw: tuple[int, int], *, short_side: int, patch_size: int, max_long_side: int | None = None
) -> tuple[int, int]:
    """Model input size (H, W) for an image of size ``image_hw`` (H, W): shortest side ``short_side``,
    both sides multiples of the patch.

    The short side is rounded to a multiple of the patch too (448 is one for patch 14, 16 and 32);
    the long side keeps the aspect ratio as closely as the patch grid allows. With
    ``max_long_side``, an image more elongated than ``max_long_side : short_side`` is scaled so that
    its long side is at most ``max_long_side`` (rounded down to the patch), and its short side is
    shorter than ``short_side``: the token count, and so the memory of attention over all tokens,
    stays bounded by that of a ``short_side x max_long_side`` input.
    """
    height, width = image_hw
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} must be at least 1x1")
    scale = short_side / min(height, width)
    longest = max(patch_size, (max_long_side // patch_size) * patch_size) if max_long_side else None
    if longest is not None:
        scale = min(scale, longest / max(height, width))

    def snap(length: float) -> int:
        snapped = max(patch_size, int(round(length / patch_size)) * patch_size)
        return min(snapped, longest) if longest is not None else snapped

    return snap(height * scale), snap(width * scale)


class GemScorer(nn.Module):
    """Dense patch-text similarity for a vocabulary (GEM or a baseline, see ``DensePathConfig``)."""

    def __init__(
        self,
        clip_model: nn.Module,
        *,
        tokenizer,  # noqa: ANN001 - open_clip tokenizer: list[str] -> LongTensor [N, L]
        config: ScorerConfig,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
    ) -> None:
        super().__init__()
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.config = config
        self.encoder = DenseVisionEncoder(clip_model.visual, config=config.path)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._empty_prompt: torch.Tensor | None = None  # [E], feature surgery of a single class

    @property
    def device(self) -> torch.device:
        return self.clip_model.visual.proj.device

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def logit_scale(self) -> float:
        """The model's trained softmax scale (exp of ``logit_scale``; 100 for OpenAI CLIP)."""
        return float(self.clip_model.logit_scale.detach().exp().clamp(max=100).item())

    @torch.no_grad()
    def encode_text(self, classes: Sequence[str], *, templates: Sequence[str] | None = None) -> torch.Tensor:
        """Embed class names with the prompt templates: [C, E] float32, L2-normalised."""
        return encode_vocabulary(
            classes,
            encode_tokens=self.clip_model.encode_text,
            tokenizer=self.tokenizer,
            templates=self.config.templates if templates is None else templates,
            device=self.device,
        )

    def input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Model input size (H, W) for an image of size ``image_hw`` (H, W)."""
        return input_size_hw(
            image_hw,
            short_side=self.config.short_side,
            patch_size=self.patch_size,
            max_long_side=self.config.max_long_side,
        )

    @torch.no_grad()
    def preprocess(self, image_rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB -> [1, 3, h, w] float32 on the scorer's device (bicubic resize, normalised)."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image_rgb.shape} {image_rgb.dtype}")
        height, width = self.input_size(image_rgb.shape[:2])
        resized = Image.fromarray(image_rgb).resize((width, height), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None].float().div_(255)  # [1, 3, h, w]
        return (tensor.to(self.device) - self.mean) / self.std

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] preprocessed -> [B, H/p, W/p, E] L2-normalised float32 features."""
        features = self.encoder(images.to(self.device, self.clip_model.visual.proj.dtype))
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def patch_similarity(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every patch with every class.

        images: [B, 3, H, W] preprocessed; text: [C, E] from ``encode_text``.
        Returns [B, C, H // patch, W // patch] float32 raw cosine similarity in [-1, 1]; with
        ``feature_surgery`` (CLIP Surgery), the feature-surgery similarity instead.
        """
        if not self.config.path.feature_surgery:
            features = self.patch_features(images)  # [B, h, w, E]
            return torch.einsum("bhwe,ce->bchw", features, text.to(features.device, torch.float32))
        patches, image_embedding = self.encoder.features(
            images.to(self.device, self.clip_model.visual.proj.dtype), with_image_embedding=True
        )
        text = text.to(patches.device, torch.float32)
        return feature_surgery(
            F.normalize(patches.float(), dim=-1),
            F.normalize(image_embedding.float(), dim=-1),
            text,
            empty_text=self.empty_prompt_embedding().to(text.device) if text.shape[0] == 1 else None,
        )

    def empty_prompt_embedding(self) -> torch.Tensor:
        """[E] embedding of the prompt templates with an empty class name, computed once."""
        if self._empty_prompt is None:
            self._empty_prompt = encode_empty_prompt(
                encode_tokens=self.clip_model.encode_text,
                tokenizer=self.tokenizer,
                templates=self.config.templates,
                device=self.device,
            )
        return self._empty_prompt


def _pretrained_tag_config(model_name: str, pretrained: str) -> dict | None:
    return open_clip.get_pretrained_cfg(model_name, pretrained) or None


def load_clip_model(
    *, model_name: str, pretrained: str | None, device: torch.device | str = "cpu", cache_dir: str | None = None
) -> nn.Module:
    """Build an open_clip model from a pretrained tag (downloaded) or a local checkpoint file.

    ``pretrained=None`` gives random weights (for tests). Errors name the bad value and the choices.
    """
    if model_name not in open_clip.list_models():
        close = [name for name in open_clip.list_models() if name.lower().startswith(model_name.lower()[:5])]
        raise ValueError(
            f"unknown CLIP model {model_name!r}; open_clip names look like ViT-B-16, ViT-B-16-quickgelu, "
            f"ViT-L-14 (similar names: {', '.join(sorted(close)[:12]) or 'none'})"
        )
    force_quick_gelu = False
    if pretrained is not None:
        tag_config = _pretrained_tag_config(model_name, pretrained)
        if tag_config is None:
            if not os.path.exists(pretrained):
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                raise FileNotFoundError(
                    f"--pretrained {pretrained!r} is neither a pretrained tag of {model_name} "
                    f"(tags: {', '.join(tags) or 'none'}) nor an existing checkpoint file; see {CHECKPOINTS_README}"
                )
            if not os.path.isfile(pretrained):
                raise IsADirectoryError(f"CLIP checkpoint {pretrained!r} is a folder, not a checkpoint file")
        else:
            # OpenAI weights were trained with QuickGELU; build the matching activation.
            force_quick_gelu = bool(tag_config.get("quick_gelu", False))
    try:
        model = open_clip.create_model(
            model_name,
            pretrained=pretrained,
            device=device,
            force_quick_gelu=force_quick_gelu,
            cache_dir=cache_dir,
        )
    except (RuntimeError, AssertionError, KeyError, ValueError) as error:
        # open_clip reports a checkpoint of another shape with any of these
        if pretrained is not None and os.path.isfile(pretrained):
            raise ValueError(
                f"CLIP checkpoint {pretrained!r} does not fit the architecture {model_name}: {error}"
            ) from error
        raise WeightsUnavailableError(
            f"could not get the weights {model_name} / {pretrained}: {str(error).rstrip('.')}. "
            "If this machine is offline, download them elsewhere and pass the file with --pretrained; "
            f"see {CHECKPOINTS_README}"
        ) from error
    return model.eval()


def scorer_config(
    *,
    method: str = "gem",
    depth: int | None = None,
    iterations: int | None = None,
    temperature: float | str | None = None,
    maskclip_variant: str | None = None,
    feature_surgery: bool | None = None,
    projections: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    short_side: int | None = None,
    max_long_side: int | None = None,
) -> ScorerConfig:
    """The ``ScorerConfig`` of ``build_gem_scorer``'s options (without loading weights).

    The path options (``depth``, ``iterations``, ``temperature``, ``maskclip_variant``,
    ``feature_surgery``, ``projections``) default to the paper's settings for ``method``; one that ``method`` does not
    take is a ``ValueError``. ``short_side`` and ``max_long_side`` default to ``ScorerConfig``'s.
    """
    options = {
        "depth": depth,
        "iterations": iterations,
        "temperature": temperature,
        "maskclip_variant": maskclip_variant,
        "feature_surgery": feature_surgery,
        "projections": tuple(projections) if projections is not None else None,
    }
    path = DensePathConfig.for_method(method, **{key: value for key, value in options.items() if value is not None})
    sizes = {"short_side": short_side, "max_long_side": max_long_side}
    return ScorerConfig(
        path=path,
        templates=tuple(templates) if templates is not None else DEFAULT_TEMPLATES,
        **{key: value for key, value in sizes.items() if value is not None},
    )


def build_gem_scorer(
    *,
    model_name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    device: str | torch.device = "auto",
    cache_dir: str | None = None,
    **options: Any,
) -> GemScorer:
    """Build a ``GemScorer`` (in eval mode) from an open_clip model name and weights.

    ``pretrained``: an open_clip tag (``openai``, ``metaclip_400m``, ...) downloaded on first use,
    a local checkpoint file, or None for random weights. ``options`` are those of ``scorer_config``
    (``method``, ``depth``, ``iterations``, ``templates``, ``short_side``, ...).
    """
    config = scorer_config(**options)
    device = resolve_device(device)
    model = load_clip_model(model_name=model_name, pretrained=pretrained, device=device, cache_dir=cache_dir)
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    scorer = GemScorer(
        model,
        tokenizer=open_clip.get_tokenizer(model_name),
        config=config,
        mean=preprocess_cfg.get("mean", OPENAI_MEAN),
        std=preprocess_cfg.get("std", OPENAI_STD),
    )
    return scorer.to(device).eval()
