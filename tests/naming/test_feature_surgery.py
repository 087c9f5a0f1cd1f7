"""CLIP Surgery's feature surgery against a hand computation and its element-wise definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gem_sam.naming.feature_surgery import feature_surgery


def _elementwise_definition(patches, image_embedding, text):
    """CLIP Surgery eq. 4 as written: element-wise products, class weights, redundant features."""
    batch, height, width, channels = patches.shape
    out = torch.zeros(batch, text.shape[0], height, width)
    for b in range(batch):
        probability = torch.softmax(2 * image_embedding[b] @ text.T, dim=0)  # [C]
        weights = probability / probability.mean()
        for i in range(height):
            for j in range(width):
                products = patches[b, i, j][None] * text * weights[:, None]  # [C, E]
                redundant = products.mean(dim=0)  # [E]
                out[b, :, i, j] = (products - redundant).sum(dim=1)
    return out


def test_hand_computed_two_classes() -> None:
    patches = torch.tensor([[[[1.0, 0.0]]]])  # one patch along e1
    image_embedding = torch.tensor([[1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # p = softmax(2 * [1, 0]) = [e^2, 1] / (e^2 + 1); w = p / 0.5; w * s = [2 e^2 / (e^2 + 1), 0]
    first = 2 * math.e**2 / (math.e**2 + 1)
    expected = torch.tensor([first / 2, -first / 2]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(feature_surgery(patches, image_embedding, text), expected)


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_matches_the_elementwise_definition(classes: int) -> None:
    torch.manual_seed(classes)
    patches = F.normalize(torch.randn(2, 3, 4, 8), dim=-1)
    image_embedding = F.normalize(torch.randn(2, 8), dim=-1)
    text = F.normalize(torch.randn(classes, 8), dim=-1)
    torch.testing.assert_close(
        feature_surgery(patches, image_embedding, text),
        _elementwise_definition(patches, image_embedding, text),
        atol=1e-6,
        rtol=1e-5,
    )


def test_single_class_removes_the_empty_prompt() -> None:
    torch.manual_seed(0)
    patches = F.normalize(torch.randn(1, 2, 2, 4), dim=-1)
    text, empty = F.normalize(torch.randn(1, 4), dim=-1), F.normalize(torch.randn(4), dim=-1)
    out = feature_surgery(patches, F.normalize(torch.randn(1, 4), dim=-1), text, empty_text=empty)
    expected = torch.einsum("bhwe,e->bhw", patches, text[0] - empty)[:, None]
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="empty prompt"):
        feature_surgery(patches, torch.zeros(1, 4), text)
