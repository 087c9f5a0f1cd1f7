"""Dense patch features from an open_clip ViT: GEM and the training-free baselines.

GEM (Grounding Everything, CVPR 2024) runs a second path beside the ViT over its last ``d``
blocks. Each block of that path adds ``ls_1(SS(ln_1(x_ori)))`` to the path's tokens, where
``x_ori`` are the tokens of the unchanged ViT at that block and ``SS`` is the self-self attention
below; the path skips the MLPs. Both paths end with ``ln_post`` on every token and ``@ proj``.

Self-self attention, per head and for each projection ``s`` in {q, k, v} (paper eq. 5-7)::

    p_0 = n(x W_s)                                  n = L2 normalisation over channels
    p_k = n(softmax(p_{k-1} p_{k-1}^T / tau) p_{k-1})   for k = 1 .. K
    O_s = softmax(p_K p_K^T / tau) V
    O   = mean_s(O_s) W_out

with the adaptive temperature ``1 / tau = mean_i ||x_i||_2 / sqrt(head_dim)`` (eq. 4) over all
tokens, class token included. The baselines of the paper are settings of the same module:

* ``clip`` reads the ViT's own patch tokens.
* ``maskclip`` replaces the last block's attention by its value path. ``maskclip_variant="official"``
  (default) is MaskCLIP's own code: ``y = x + ls_1(out_proj(v(ln_1(x))))`` followed by the block's
  MLP, ``y + ls_2(mlp(ln_2(y)))``. ``"surgery"`` is the variant of CLIP Surgery's code base (which
  the GEM authors' baseline numbers come from): ``x + ls_1(out_proj(v(ln_1(x))))``, no MLP.
* ``clipsurgery`` is a v-v path without normalisation at the ViT's own temperature; its feature
  surgery (on by default, ``feature_surgery``) is applied to the similarities by the scorer
  (``feature_surgery.py``). CLIP Surgery's prompt ensemble is not built in: pass its templates as
  ``templates`` to use it.

Which options each method takes is in ``METHOD_OPTIONS``; giving another is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

Method = Literal["gem", "clip", "maskclip", "clipsurgery"]
METHODS: tuple[str, ...] = ("gem", "clip", "maskclip", "clipsurgery")
PROJECTIONS: tuple[str, ...] = ("q", "k", "v")
MASKCLIP_VARIANTS: tuple[str, ...] = ("official", "surgery")
# The path options that each method takes; any other option given for it is refused.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "gem": ("depth", "iterations", "temperature", "projections", "normalize"),
    "clip": (),
    "maskclip": ("maskclip_variant",),
    "clipsurgery": ("depth", "feature_surgery"),
}


@dataclass(frozen=True)
class DensePathConfig:
    """How dense patch features are read from the ViT (defaults: GEM as in the paper)."""

    method: Method = "gem"  # gem | clip | maskclip | clipsurgery
    depth: int = 4  # number of last ViT blocks that the parallel path spans (paper's d)
    iterations: int = 1  # self-self attention iterations K before the assignment to V
    temperature: float | Literal["adaptive", "standard"] = "adaptive"  # tau: eq. 4, sqrt(head_dim), or a number
    projections: tuple[str, ...] = PROJECTIONS  # projections ensembled by the self-self attention
    normalize: bool = True  # L2-normalise projected tokens before each self-self attention
    maskclip_variant: str = "official"  # maskclip: official (residual + MLP) | surgery (residual, no MLP)
    feature_surgery: bool = False  # clipsurgery: remove the features shared by all classes (its eq. 4)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not supported; choose one of {', '.join(METHODS)}")
        if self.depth < 1:
            raise ValueError(f"depth={self.depth} must be at least 1 (the number of last ViT blocks to use)")
        if self.iterations < 0:
            raise ValueError(f"iterations={self.iterations} must be 0 or more")
        if not self.projections or any(p not in PROJECTIONS for p in self.projections):
            raise ValueError(f"projections={self.projections!r} must be a non-empty subset of {PROJECTIONS}")
        if isinstance(self.temperature, str):
            if self.temperature not in ("adaptive", "standard"):
                raise ValueError(
                    f"temperature={self.temperature!r} must be 'adaptive', 'standard' or a positive number"
                )
        elif not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be a positive number")
        if self.maskclip_variant not in MASKCLIP_VARIANTS:
            raise ValueError(f"maskclip_variant={self.maskclip_variant!r} is not one of {', '.join(MASKCLIP_VARIANTS)}")

    @classmethod
    def for_method(cls, method: str, **overrides: object) -> DensePathConfig:
        """The paper's settings for ``method``, with ``overrides`` applied on top.

        Raises ``ValueError`` for an override that ``method`` does not take (``METHOD_OPTIONS``),
        e.g. a depth for ``maskclip``, which always uses the last block.
        """
        presets: dict[str, dict[str, object]] = {
            "gem": {},
            "clip": {},
            "maskclip": {"depth": 1},
            # CLIP Surgery's v-v attention over the last 6 blocks, no normalisation, ViT temperature.
            "clipsurgery": {
                "depth": 6,
                "iterations": 0,
                "projections": ("v",),
                "normalize": False,
                "temperature": "standard",
                "feature_surgery": True,
            },
        }
        if method not in presets:
            raise ValueError(f"method={method!r} is not supported; choose one of {', '.join(METHODS)}")
        refused = sorted(set(overrides) - set(METHOD_OPTIONS[method]))
        if refused:
            takes = ", ".join(METHOD_OPTIONS[method]) or "no path options"
            raise ValueError(f"method {method!r} does not take {', '.join(refused)} (it takes: {takes})")
        return replace(cls(method=method, **presets[method]), **overrides)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line saying which variant of the method this is (for reports)."""
        if self.method == "clip":
            return "clip: the ViT's own patch tokens"
        if self.method == "maskclip":
            return {
                "official": "maskclip (official): last block with its attention replaced by the value path, "
                "residual and MLP kept",
                "surgery": "maskclip (CLIP Surgery variant): x + out_proj(v) in the last block, no MLP",
            }[self.maskclip_variant]
        if self.method == "clipsurgery":
            surgery = "with feature surgery" if self.feature_surgery else "architecture only, no feature surgery"
            return f"clipsurgery: v-v path over the last {self.depth} blocks, {surgery}"
        return f"gem: self-self path over the last {self.depth} blocks, {self.iterations} iteration(s)"


class SelfSelfAttention(nn.Module):
    """Self-self attention that reads the weights of one ViT block's ``nn.MultiheadAttention``.

    The weights are shared with the block, never copied, so the module follows the model across
    devices and dtypes.
    """

    def __init__(self, attn: nn.MultiheadAttention, *, config: DensePathConfig) -> None:
        super().__init__()
        if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
            raise TypeError(
                f"self-self attention needs a block with a packed nn.MultiheadAttention, got {type(attn).__name__}"
            )
        self.attn = attn
        self.config = config

    def inverse_temperature(self, x: torch.Tensor, head_dim: int) -> torch.Tensor | float:
        """``1 / tau``: a [B, 1, 1, 1] tensor for the adaptive temperature, else a number."""
        temperature = self.config.temperature
        if temperature == "adaptive":
            return x.norm(dim=-1).mean(dim=-1)[:, None, None, None] * head_dim**-0.5  # [B, 1, 1, 1]
        if temperature == "standard":
            return head_dim**-0.5
        return 1.0 / float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] tokens after the block's ``ln_1``; returns [B, N, D] (after ``out_proj``)."""
        batch, tokens, width = x.shape
        heads = self.attn.num_heads
        head_dim = width // heads
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)  # [B, N, 3D]
        qkv = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, N, hd]
        projected = dict(zip(PROJECTIONS, qkv.unbind(0), strict=True))  # each [B, H, N, hd]
        value = projected["v"]
        inv_temp = self.inverse_temperature(x, head_dim)

        out = torch.zeros_like(value)
        for name in self.config.projections:
            p = projected[name]
            for _ in range(self.config.iterations):
                p = self._attention(p, inv_temp) @ self._normalized(p)  # [B, H, N, hd]
            out = out + self._attention(p, inv_temp) @ value  # [B, H, N, hd]
        out = out / len(self.config.projections)
        out = out.transpose(1, 2).reshape(batch, tokens, width)  # [B, N, D]
        return F.linear(out, self.attn.out_proj.weight, self.attn.out_proj.bias)

    def _normalized(self, p: torch.Tensor) -> torch.Tensor:
        return F.normalize(p, dim=-1) if self.config.normalize else p

    def _attention(self, p: torch.Tensor, inv_temp: torch.Tensor | float) -> torch.Tensor:
        p = self._normalized(p)
        return (p @ p.transpose(-2, -1) * inv_temp).softmax(dim=-1)  # [B, H, N, N]


def resample_positional_embedding(positional_embedding: torch.Tensor, *, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT's learned positional embedding to a new patch grid.

    positional_embedding: [1 + G*G, D] with the class token first and a square G x G patch grid.
    Returns [1 + h*w, D] for ``grid_hw = (h, w)``, bicubic with antialiasing (as the official GEM).
    """
    class_pos, patch_pos = positional_embedding[:1], positional_embedding[1:]
    old = math.isqrt(patch_pos.shape[0])
    if old * old != patch_pos.shape[0]:
        raise ValueError(f"positional embedding of {patch_pos.shape[0]} patches is not a square grid")
    if (old, old) == tuple(grid_hw):
        return positional_embedding
    grid = patch_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2)  # [1, D, G, G]
    grid = F.interpolate(grid, size=tuple(grid_hw), mode="bicubic", antialias=True)  # [1, D, h, w]
    return torch.cat([class_pos, grid.permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1)])


class DenseVisionEncoder(nn.Module):
    """Patch features of an open_clip ``VisionTransformer`` along a GEM or baseline path.

    Reads the ViT's named parts (``conv1``, ``class_embedding``, ``positional_embedding``,
    ``ln_pre``, ``transformer.resblocks``, ``ln_post``, ``proj``) and runs them itself, so open_clip
    is never patched. Works for batch-first (open_clip >= 2.26) and sequence-first blocks.
    """

    def __init__(self, visual: nn.Module, *, config: DensePathConfig) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise TypeError(
                f"dense features need an open_clip VisionTransformer image tower, got {type(visual).__name__}"
                " (timm and ResNet towers are not supported)"
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise TypeError("ViTs with attentional pooling are not supported")
        blocks = visual.transformer.resblocks
        if config.depth > len(blocks):
            raise ValueError(f"depth={config.depth} exceeds the {len(blocks)} blocks of this ViT")
        self.visual = visual
        self.config = config
        self.first_path_block = len(blocks) - config.depth
        self.batch_first = getattr(visual.transformer, "batch_first", False)
        uses_self_self = config.method in ("gem", "clipsurgery")
        self.self_self = (
            nn.ModuleList(SelfSelfAttention(block.attn, config=config) for block in blocks[self.first_path_block :])
            if uses_self_self
            else nn.ModuleList()
        )
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def patch_size(self) -> int:
        return int(self.visual.patch_size[0])

    def positional_embedding(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """[1 + h*w, D] positional embedding for a patch grid, cached per grid size."""
        key = tuple(grid_hw)
        if key not in self._pos_cache:
            self._pos_cache[key] = resample_positional_embedding(self.visual.positional_embedding.detach(), grid_hw=key)
        return self._pos_cache[key]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module hook
        self._pos_cache.clear()  # cached embeddings must follow device / dtype moves
        return super()._apply(fn, recurse)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] -> tokens [B, 1 + h*w, D] after ``ln_pre`` (class token first)."""
        visual = self.visual
        x = visual.conv1(images)  # [B, D, h, w]
        grid_hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B, 1, D]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid_hw).to(x.dtype)
        x = visual.patch_dropout(x)
        return visual.ln_pre(x)

    def _block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run ViT block ``index`` on batch-first tokens [B, N, D]."""
        block = self.visual.transformer.resblocks[index]
        if self.batch_first:
            return block(x)
        return block(x.transpose(0, 1)).transpose(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] with H, W multiples of the patch size.

        Returns projected patch features [B, H/p, W/p, E] (not normalised) of the configured path.
        """
        return self.features(images, with_image_embedding=False)[0]

    def features(self, images: torch.Tensor, *, with_image_embedding: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch features [B, H/p, W/p, E] of the configured path and, if asked, the unchanged ViT's
        image embedding [B, E] (its class token after ``ln_post @ proj``); neither is normalised."""
        batch, _, height, width = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
        x = self.embed(images)  # [B, N, D]
        for index in range(self.first_path_block):
            x = self._block(index, x)

        blocks = self.visual.transformer.resblocks
        method = self.config.method
        if method == "clip":
            for index in range(self.first_path_block, len(blocks)):
                x = self._block(index, x)
            tokens = x
        elif method == "maskclip":
            tokens = self._value_path_block(x)
        else:
            tokens = x  # the parallel path starts from the input of its first block
            for offset, self_self in enumerate(self.self_self):
                block = blocks[self.first_path_block + offset]
                tokens = tokens + block.ls_1(self_self(block.ln_1(x)))
                if offset + 1 < len(self.self_self) or with_image_embedding:
                    x = self._block(self.first_path_block + offset, x)

        projected = self.visual.ln_post(tokens) @ self.visual.proj  # [B, N, E]
        patches = projected[:, 1:].reshape(batch, height // p, width // p, -1)
        if not with_image_embedding:
            return patches, None
        if method == "maskclip":
            x = self._block(len(blocks) - 1, x)
        return patches, self.visual.ln_post(x[:, 0]) @ self.visual.proj  # [B, E]

    def _value_path_block(self, x: torch.Tensor) -> torch.Tensor:
        """MaskCLIP: the last block with its attention replaced by the value projection and ``out_proj``,
        plus the residual, and the block's MLP for the official variant. x: [B, N, D] -> [B, N, D]."""
        block = self.visual.transformer.resblocks[-1]
        attn = block.attn
        width = x.shape[-1]
        value = F.linear(block.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])  # [B, N, D]
        x = x + block.ls_1(F.linear(value, attn.out_proj.weight, attn.out_proj.bias))  # [B, N, D]
        if self.config.maskclip_variant == "official":
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return x
