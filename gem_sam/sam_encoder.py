"""SAM's image encoder with bounded memory: global attention a chunk of query rows at a time.

``ImageEncoderViT`` materialises its global attention as [heads, 4096, 4096] (805 MB in float32 for
ViT-B), several times over (scores, relative-position sum, softmax). Each query row's softmax only needs
its own row of scores, so computing a band of image rows at a time gives the same result with a fraction
of the memory. Windowed blocks, the patch embedding and the neck run as SAM's own modules.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Attention, Block, ImageEncoderViT, get_rel_pos

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
        scores = (q[:, rows] * attn.scale) @ k.transpose(-2, -1)  # [B*heads, band*W, H*W]
        if attn.use_rel_pos:
            band_q = q[:, rows].reshape(batch * heads, bottom - top, width, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", band_q, rel_pos_h[top:bottom])  # [B*heads, band, W, H]
            rel_w = torch.einsum("bhwc,wkc->bhwk", band_q, rel_pos_w)  # [B*heads, band, W, W]
            scores = scores.view(batch * heads, bottom - top, width, height, width)
            scores = (scores + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(
                batch * heads, (bottom - top) * width, height * width
            )
        out[:, rows] = scores.softmax(dim=-1) @ v
    out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return attn.proj(out)


def _global_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` for a block without windows (global attention)."""
    x = x + banded_global_attention(block.attn, block.norm1(x))
    return x + block.mlp(block.norm2(x))


def encode_image(encoder: ImageEncoderViT, images: torch.Tensor) -> torch.Tensor:
    """``encoder(images)`` with global-attention blocks computed in bands. images: [B, 3, 1024, 1024]
    preprocessed (``Sam.preprocess``); returns the [B, 256, 64, 64] image embedding."""
    x = encoder.patch_embed(images)  # [B, 64, 64, C]
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = block(x) if block.window_size > 0 else _global_block(block, x)
    return encoder.neck(x.permute(0, 3, 1, 2))
