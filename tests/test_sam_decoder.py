"""The reorganised point-prompt decoder computes SAM's MaskDecoder outputs."""

from __future__ import annotations

import pytest
import torch

from gem_sam.sam_decoder import PointPromptDecoder

from .conftest import tiny_sam


@pytest.mark.parametrize("prompts", [1, 5, 33])
def test_matches_mask_decoder(prompts: int) -> None:
    sam = tiny_sam()
    torch.manual_seed(prompts)
    embedding = torch.randn(1, 256, 64, 64)
    coords = torch.rand(prompts, 2) * 1024
    labels = torch.ones(prompts, 1, dtype=torch.int)
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=None)
        reference_masks, reference_iou = sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        decoder = PointPromptDecoder(sam)
        tokens, image_tokens = decoder.transform(embedding, coords)
        iou = decoder.iou_predictions(tokens)
        selected = torch.arange(0, prompts, 2)  # masks for a subset of the prompts only
        masks = decoder.mask_logits(tokens[selected], image_tokens[selected])
    torch.testing.assert_close(iou, reference_iou, atol=1e-5, rtol=1e-5)
    scale = reference_masks.abs().max()
    assert scale > 1.0  # the logits are not trivially small
    torch.testing.assert_close(masks, reference_masks[selected], atol=1e-5 * scale, rtol=1e-4)


def test_no_selected_prompts() -> None:
    decoder = PointPromptDecoder(tiny_sam())
    with torch.no_grad():
        tokens, image_tokens = decoder.transform(torch.randn(1, 256, 64, 64), torch.rand(3, 2) * 1024)
        assert decoder.mask_logits(tokens[:0], image_tokens[:0]).shape == (0, 3, 256, 256)
