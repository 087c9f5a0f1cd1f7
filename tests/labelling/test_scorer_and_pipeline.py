"""The scorer's public API and the labelling pipeline on real photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gem_sam import AutoLabeller, build_gem_scorer
from gem_sam.mask_ops import decode_rle
from gem_sam.sam import GridMaskGenerator, MaskGeneratorConfig

from ..conftest import LOOSE_SETTINGS, TINY_CLIP_NAME, rgb_photo, tiny_sam

REPO_ROOT = Path(__file__).resolve().parents[2]


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


BANNER_SCRIPT = """
import json, resource, sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from tests.conftest import TINY_CLIP_CONFIG, TINY_CLIP_NAME, SKIMAGE_DATA, register_clip_config
from gem_sam import build_gem_scorer

register_clip_config(Path(sys.argv[2]), TINY_CLIP_NAME, TINY_CLIP_CONFIG)
scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=sys.argv[3], device="cpu")
banner = np.asarray(Image.open(SKIMAGE_DATA / "rocket.jpg").convert("RGB").resize((2000, 100)))
text = scorer.encode_text(["rocket", "sky"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
similarity = scorer.patch_similarity(scorer.preprocess(banner), text)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kb": after - before, "shape": list(similarity.shape)}))
"""


def test_a_banner_is_scored_within_bounded_memory(tiny_clip_checkpoint: Path, tmp_path: Path) -> None:
    """A 100x2000 banner at shortest side 448 would be 448x8960 (15,680 tokens): the tiny ViT's
    self-self attention alone would take 3 GB per [3 heads, N, N] matrix. The long-side cap makes it
    96x1792 (672 tokens). Peak memory is measured in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", BANNER_SCRIPT, str(REPO_ROOT), str(tmp_path / "configs"), str(tiny_clip_checkpoint)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["shape"] == [1, 2, 96 // 16, 1792 // 16]
    assert measured["growth_kb"] < 256 * 1024, measured  # peak RSS growth of the scoring call


@pytest.mark.parametrize("classes", [["cat"], ["cat", "dog", "car"]])
def test_clip_surgery_scorer_applies_feature_surgery(tiny_clip_checkpoint: Path, classes) -> None:
    """The clipsurgery scorer's map is feature surgery of its v-v path features, weighted by the
    unchanged ViT's own image embedding (open_clip's pooled output); with one class the empty
    prompt's embedding is removed."""
    scorer = build_gem_scorer(
        model_name=TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint), method="clipsurgery", device="cpu"
    )
    plain = build_gem_scorer(
        model_name=TINY_CLIP_NAME,
        pretrained=str(tiny_clip_checkpoint),
        method="clipsurgery",
        feature_surgery=False,
        device="cpu",
    )
    torch.manual_seed(0)
    images = torch.randn(1, 3, 64, 64)  # open_clip's own forward needs the native grid
    text = scorer.encode_text(classes)
    with torch.no_grad():
        patches = plain.patch_features(images)  # [1, 4, 4, E] normalised
        image_embedding = F.normalize(scorer.clip_model.encode_image(images), dim=-1)
        empty = F.normalize(scorer.clip_model.encode_text(scorer.tokenizer(["a photo of a ."])), dim=-1)[0]
    cosine = torch.einsum("bhwe,ce->bchw", patches, text)
    if len(classes) == 1:
        expected = cosine - torch.einsum("bhwe,e->bhw", patches, empty)[:, None]
    else:
        weights = torch.softmax(2 * image_embedding @ text.T, dim=-1)
        weights = weights / weights.mean()
        weighted = cosine * weights[:, :, None, None]
        expected = weighted - weighted.mean(dim=1, keepdim=True)
    torch.testing.assert_close(scorer.patch_similarity(images, text), expected, atol=1e-5, rtol=1e-5)
