"""SAM 1's image encoder (ViT) with bounded memory and fused attention.

``ImageEncoderViT`` materialises its global attention as [heads, 4096, 4096] (805 MB in float32 for
ViT-B), several times over (scores, relative-position sum, softmax). Each query row's softmax only needs
its own row of scores, so this module computes a band of image rows at a time, with
``scaled_dot_product_attention`` taking the decomposed relative-position terms as an additive mask;
windowed blocks use the same function on each window. The patch embedding, projections, MLPs and the
neck are SAM's own modules. The embedding equals SAM's up to float rounding (about 1e-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)

ROWS_PER_CHUNK = 16  # image rows of queries per chunk: [heads, 16 * 64, 4096] scores for a 64x64 grid


def banded_global_attention(attn: Attention, x: torch.Tensor, *, rows_per_chunk: int = ROWS_PER_CHUNK) -> torch.Tensor:
    """``attn(x)`` for x [B, H, W, C], computed ``rows_per_chunk`` image rows of queries at a time."""
    batch, height, width, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, batch * heads, height * width, -1).unbind(0)  # each [B*heads, H*W, d]
    if attn.use_rel_pos:
        rel_pos_h = get_rel_pos(height, height, attn.rel_pos_h)  # [H, H, d]
        rel_pos_w = get_rel_pos(width, width, attn.rel_pos_w)  # [W, W, d]
    out = torch.empty_like(q)
    for top in range(0, height, rows_per_chunk):
        bottom = min(height, top + rows_per_chunk)
        rows = slice(top * width, bottom * width)
        bias = None
        if attn.use_rel_pos:
            band_q = q[:, rows].reshape(batch * heads, bottom - top, width, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", band_q, rel_pos_h[top:bottom])  # [B*heads, band, W, H]
            rel_w = torch.einsum("bhwc,wkc->bhwk", band_q, rel_pos_w)  # [B*heads, band, W, W]
            bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(
                batch * heads, (bottom - top) * width, height * width
            )
        # Fused attention (softmax(q k^T * scale + bias) v) without a separate scores tensor.
        out[:, rows] = F.scaled_dot_product_attention(q[:, rows], k, v, attn_mask=bias, scale=attn.scale)
    out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return attn.proj(out)


def _block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` for x [B, H, W, C], windowed or global, with fused attention."""
    shortcut = x
    x = block.norm1(x)
    if block.window_size > 0:
        height, width = x.shape[1:3]
        windows, padded_hw = window_partition(x, block.window_size)
        attended = banded_global_attention(block.attn, windows, rows_per_chunk=block.window_size)
        x = window_unpartition(attended, block.window_size, padded_hw, (height, width))
    else:
        x = banded_global_attention(block.attn, x)
    x = shortcut + x
    return x + block.mlp(block.norm2(x))


def encode_image(encoder: ImageEncoderViT, images: torch.Tensor) -> torch.Tensor:
    """``encoder(images)`` with global-attention blocks computed in bands. images: [B, 3, 1024, 1024]
    preprocessed (``Sam.preprocess``); returns the [B, 256, 64, 64] image embedding."""
    x = encoder.patch_embed(images)  # [B, 64, 64, C]
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = _block(block, x)
    return encoder.neck(x.permute(0, 3, 1, 2))
