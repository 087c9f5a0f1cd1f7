"""The reorganised point-prompt decoder computes SAM's MaskDecoder outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from gem_sam.sam.point_decoder import MULTIMASK_OUTPUTS, PointPromptDecoder, WorkSizes

from ..conftest import tiny_sam


def sam_with_random_norms():
    """Tiny SAM whose decoder LayerNorms have random gains and biases (freshly built ones are 1 and 0,
    which would hide a mistake in how the low-rank tokens carry them)."""
    sam = tiny_sam()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in sam.mask_decoder.transformer.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return sam


def reference_decoder(sam, embedding: torch.Tensor, coords: torch.Tensor, dtype: torch.dtype):
    """SAM's MaskDecoder (multimask) in ``dtype``: low-res masks [P, 3, 256, 256], IoU [P, 3]."""
    labels = torch.ones(len(coords), 1, dtype=torch.int)
    sparse, dense = sam.prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=None)
    image_pe = sam.prompt_encoder.get_dense_pe()
    decoder = copy.deepcopy(sam.mask_decoder).to(dtype)
    return decoder(
        image_embeddings=embedding.to(dtype),
        image_pe=image_pe.to(dtype),
        sparse_prompt_embeddings=sparse.to(dtype),
        dense_prompt_embeddings=dense.to(dtype),
        multimask_output=True,
    )


# The CPU's (chunks of 8 prompts, bands of 1024 tokens, logits a prompt at a time), a GPU's (one chunk, one
# band, logits of 16 prompts together), and runs of logits cut by both their size and the chunks' ends
WORK_SIZES = {
    "cpu": WorkSizes.for_device(torch.device("cpu")),
    "cuda": WorkSizes.for_device(torch.device("cuda")),
    "mixed": WorkSizes(prompts_per_chunk=8, tokens_per_band=1000, prompts_per_logit_batch=3),
}


@pytest.mark.parametrize("prompts", [1, 5, 33])
@pytest.mark.parametrize("random_norms", [False, True])
@pytest.mark.parametrize("sizes", list(WORK_SIZES))
def test_matches_mask_decoder(prompts: int, random_norms: bool, sizes: str) -> None:
    """With each of ``WORK_SIZES``, all run here on the CPU."""
    sam = sam_with_random_norms() if random_norms else tiny_sam()
    torch.manual_seed(prompts)
    embedding = torch.randn(1, 256, 64, 64)
    coords = torch.rand(prompts, 2) * 1024
    with torch.no_grad():
        reference_masks, reference_iou = reference_decoder(sam, embedding, coords, torch.float32)
        decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder, work_sizes=WORK_SIZES[sizes])
        tokens, image_tokens = decoder.transform(embedding, coords)
        iou = decoder.iou_predictions(tokens)[:, 1:]  # the multimask outputs
        selected = torch.arange(0, prompts, 2)  # masks for a subset of the prompts only
        masks = decoder.mask_logits(tokens[selected], image_tokens, selected)
    torch.testing.assert_close(iou, reference_iou, atol=1e-5, rtol=1e-5)
    scale = reference_masks.abs().max()
    assert scale > 1.0  # the logits are not trivially small
    torch.testing.assert_close(masks, reference_masks[selected], atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("mask_outputs", [MULTIMASK_OUTPUTS, (2,)])
def test_final_attention_of_the_needed_tokens_only(mask_outputs: tuple[int, ...]) -> None:
    """With ``mask_outputs``, the IoU predictions and those outputs' logits are still SAM's; asking for
    another output's logits is an error, not a NaN mask."""
    sam = sam_with_random_norms()
    torch.manual_seed(5)
    embedding = torch.randn(1, 256, 64, 64)
    coords = torch.rand(9, 2) * 1024
    with torch.no_grad():
        reference_masks, reference_iou = reference_decoder(sam, embedding, coords, torch.float32)
        decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder)
        tokens, image_tokens = decoder.transform(embedding, coords, mask_outputs=mask_outputs)
        selected = torch.tensor([7, 2, 4])
        masks = decoder.mask_logits(tokens[selected], image_tokens, selected, outputs=mask_outputs)
        with pytest.raises(ValueError, match=r"mask outputs \[0\] were not formed: add them to mask_outputs"):
            decoder.mask_logits(tokens[selected], image_tokens, selected, outputs=(0,))
    torch.testing.assert_close(decoder.iou_predictions(tokens)[:, 1:], reference_iou, atol=1e-5, rtol=1e-5)
    expected = reference_masks[selected][:, [output - 1 for output in mask_outputs]]  # the reference's are 1-3
    torch.testing.assert_close(masks, expected, atol=1e-5 * reference_masks.abs().max(), rtol=1e-4)
    # the IoU token and the mask tokens asked for are formed; the point tokens (the point and SAM's padding
    # point) and the other mask tokens never go through the final attention
    formed = [0, *(1 + output for output in mask_outputs)]
    assert not tokens[:, formed].isnan().any()
    assert tokens[:, [row for row in range(tokens.shape[1]) if row not in formed]].isnan().all()


@pytest.mark.parametrize("mask_outputs", [(), (4,), (-1, 1)])
def test_unknown_mask_outputs_are_refused(mask_outputs: tuple[int, ...]) -> None:
    sam = tiny_sam()
    decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder)
    with pytest.raises(ValueError, match=r"each must be one of \[0, 1, 2, 3\]"):
        decoder.transform(torch.randn(1, 256, 64, 64), torch.rand(2, 2) * 1024, mask_outputs=mask_outputs)


def test_as_accurate_as_the_reference_in_float32() -> None:
    """Against SAM's decoder evaluated in float64, our float32 result errs no more than SAM's own
    float32 evaluation does (within a factor 2): the reorganised algebra loses no precision."""
    sam = sam_with_random_norms()
    torch.manual_seed(3)
    embedding = torch.randn(1, 256, 64, 64)
    coords = torch.rand(24, 2) * 1024
    with torch.no_grad():
        exact_masks, exact_iou = reference_decoder(sam, embedding, coords, torch.float64)
        reference_masks, reference_iou = reference_decoder(sam, embedding, coords, torch.float32)
        decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder)
        tokens, image_tokens = decoder.transform(embedding, coords)
        masks = decoder.mask_logits(tokens, image_tokens, torch.arange(len(coords)))
        iou = decoder.iou_predictions(tokens)[:, 1:]  # the multimask outputs
    reference_error = (reference_masks.double() - exact_masks).abs().max()
    assert (masks.double() - exact_masks).abs().max() <= 2 * reference_error
    assert (iou.double() - exact_iou).abs().max() <= 2 * (reference_iou.double() - exact_iou).abs().max() + 1e-7


def test_no_selected_prompts() -> None:
    sam = tiny_sam()
    decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder)
    with torch.no_grad():
        tokens, image_tokens = decoder.transform(torch.randn(1, 256, 64, 64), torch.rand(3, 2) * 1024)
        assert decoder.mask_logits(tokens[:0], image_tokens, torch.arange(0)).shape == (0, 3, 256, 256)


@pytest.mark.parametrize("extent_hw", [(193, 256), (256, 171), (5, 9)])
def test_logits_of_a_region_are_that_region_of_the_full_logits(extent_hw: tuple[int, int]) -> None:
    sam = sam_with_random_norms()
    torch.manual_seed(11)
    decoder = PointPromptDecoder(sam.prompt_encoder, sam.mask_decoder)
    with torch.no_grad():
        tokens, image_tokens = decoder.transform(torch.randn(1, 256, 64, 64), torch.rand(4, 2) * 1024)
        selected = torch.tensor([3, 0])
        full = decoder.mask_logits(tokens[selected], image_tokens, selected)
        part = decoder.mask_logits(tokens[selected], image_tokens, selected, extent_hw=extent_hw)
    height, width = (4 * -(-size // 4) for size in extent_hw)  # whole tokens
    assert part.shape == (2, 3, height, width)
    torch.testing.assert_close(part, full[..., :height, :width], atol=1e-5, rtol=1e-5)
