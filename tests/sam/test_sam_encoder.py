"""The banded, fused-attention image encoder computes SAM's ImageEncoderViT (up to float rounding)."""

from __future__ import annotations

import pytest
import torch

from gem_sam.sam.sam1_encoder import banded_global_attention, encode_image

from ..conftest import tiny_sam


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 16, 64])
def test_global_attention_bands_match(rows_per_chunk: int) -> None:
    attention = tiny_sam().image_encoder.blocks[1].attn  # the tiny encoder's global-attention block
    torch.manual_seed(rows_per_chunk)
    x = torch.randn(1, 64, 64, 32)
    with torch.no_grad():
        expected = attention(x)
        ours = banded_global_attention(attention, x, rows_per_chunk=rows_per_chunk)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_encoder_matches_image_encoder() -> None:
    encoder = tiny_sam().image_encoder
    assert [block.window_size for block in encoder.blocks] == [14, 0]  # windowed and global blocks
    torch.manual_seed(0)
    images = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        torch.testing.assert_close(encode_image(encoder, images), encoder(images), atol=1e-5, rtol=1e-5)
