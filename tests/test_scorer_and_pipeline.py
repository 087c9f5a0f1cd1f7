"""The scorer's public API and the labelling pipeline on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gem_sam import AutoLabeller, build_gem_scorer
from gem_sam.mask_generator import GridMaskGenerator, MaskGeneratorConfig
from gem_sam.mask_ops import decode_rle

from .conftest import LOOSE_SETTINGS, TINY_CLIP_NAME, rgb_photo, tiny_sam


@pytest.fixture(scope="module")
def scorer(tiny_clip_checkpoint: Path):
    return build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint), device="cpu")


def test_public_api_shapes(scorer) -> None:
    text = scorer.encode_text(["cat", "dog"])
    assert text.shape == (2, 32) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    images = torch.randn(2, 3, 64, 96)
    sims = scorer.patch_similarity(images, text)
    assert sims.shape == (2, 2, 4, 6) and sims.dtype == torch.float32
    assert sims.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("name,expected_hw", [("astronaut.png", (448, 448)), ("coffee.png", (448, 672))])
def test_preprocess_keeps_aspect_ratio(scorer, name: str, expected_hw: tuple[int, int]) -> None:
    image = rgb_photo(name, long_side=200)
    tensor = scorer.preprocess(image)
    assert tensor.shape == (1, 3, *expected_hw)
    # normalised with CLIP's mean / std: a mid-grey pixel maps near (0.5 - mean) / std
    grey = scorer.preprocess(np.full((20, 20, 3), 128, dtype=np.uint8))
    expected = (128 / 255 - scorer.mean) / scorer.std
    torch.testing.assert_close(grey[0, :, 5, 5], expected.flatten(), atol=1e-5, rtol=0)


def test_text_is_encoded_once_per_vocabulary(scorer) -> None:
    calls = []
    original = scorer.clip_model.encode_text

    class Counting:
        def __call__(self, tokens):
            calls.append(len(tokens))
            return original(tokens)

    scorer.clip_model.encode_text = Counting()
    try:
        sam = tiny_sam()
        generator = GridMaskGenerator(sam, config=MaskGeneratorConfig(points_per_side=2, **LOOSE_SETTINGS))
        labeller = AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=["cat", "dog", "car"])
        for name in ("astronaut.png", "coffee.png"):
            labeller.label(rgb_photo(name, long_side=100))
    finally:
        del scorer.clip_model.encode_text
    assert calls == [3]


def test_labels_are_the_best_class_of_the_upsampled_map(scorer) -> None:
    """Each annotation's class is the argmax of the full-resolution mean similarity in its mask."""
    generator = GridMaskGenerator(tiny_sam(), config=MaskGeneratorConfig(points_per_side=3, **LOOSE_SETTINGS))
    vocabulary = ["cat", "person", "rocket", "coffee cup"]
    labeller = AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=vocabulary)
    image = rgb_photo("astronaut.png", long_side=120)
    annotations = labeller.label(image)
    assert annotations
    similarity = labeller.similarity(image)
    upsampled = F.interpolate(similarity[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    for annotation in annotations:
        mask = torch.from_numpy(decode_rle(annotation["segmentation"]))
        means = upsampled[:, mask].mean(dim=1)
        assert annotation["class_index"] == int(means.argmax())
        probability = torch.softmax(means * scorer.logit_scale, dim=0).max()
        assert annotation["score"] == pytest.approx(float(probability), abs=1e-4)
