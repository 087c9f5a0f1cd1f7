"""Parity with the official GEM implementation (gem_torch 1.0.1 on open_clip 2.23.0).

The golden values come from ``scripts/make_gem_parity_fixture.py`` run in the official package's own
environment. The fixture's weights are loaded here through the same checkpoint-file path that users
run (``build_gem_scorer(pretrained=FILE)``). Set ``GEM_PARITY_FIXTURE`` to compare against another
fixture (e.g. ViT-B-16); ``-s`` prints the largest differences.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gem_sam import build_gem_scorer

from ..conftest import register_clip_config

FIXTURE = Path(os.environ.get("GEM_PARITY_FIXTURE", Path(__file__).parent / "fixtures" / "gem_parity_small.pt"))
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def checkpoint(fixture: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's weights as a float32 open_clip checkpoint file."""
    folder = tmp_path_factory.mktemp("parity")
    if fixture["model_config"] is not None:
        register_clip_config(folder / "configs", fixture["model_name"], fixture["model_config"])
    state = {
        key: value.float() if value.is_floating_point() else value for key, value in fixture["state_dict_fp16"].items()
    }
    rows = state["token_embedding.weight"]
    if "token_rows" in fixture:  # only the rows the prompts use were stored; the others are never read
        full = torch.zeros(49408, rows.shape[1])
        full[fixture["token_rows"]] = rows
        state["token_embedding.weight"] = full
    path = folder / "weights.pt"
    torch.save(state, path)
    return path


def _settings(fixture: dict) -> list[tuple[int, int]]:
    return sorted({(case["depth"], case["iterations"]) for case in fixture["cases"]})


@pytest.mark.parametrize("depth,iterations", [(4, 1), (4, 2), (6, 1), (6, 2)])
def test_patch_similarity_matches_official_gem(fixture: dict, checkpoint: Path, depth: int, iterations: int) -> None:
    assert (depth, iterations) in _settings(fixture)
    scorer = build_gem_scorer(
        model_name=fixture["model_name"], pretrained=str(checkpoint), depth=depth, iterations=iterations, device="cpu"
    )
    text = scorer.encode_text(fixture["classes"])
    assert (text - fixture["text_embeddings"]).abs().max() < TOLERANCE

    cases = [case for case in fixture["cases"] if (case["depth"], case["iterations"]) == (depth, iterations)]
    assert {case["image"] for case in cases} == {"square_native", "square_resized", "non_square"}
    for case in cases:
        image = fixture["images"][case["image"]]
        ours = scorer.patch_similarity(image, text)
        expected = case["patch_similarity"]
        assert ours.shape == expected.shape
        difference = (ours - expected).abs().max().item()
        print(f"d={depth} K={iterations} {case['image']} {tuple(image.shape[2:])}: max |diff| {difference:.2e}")
        assert difference < TOLERANCE, case["image"]
        if "upsampled_similarity" in case:
            upsampled = F.interpolate(ours, size=image.shape[2:], mode="bilinear", align_corners=False)
            assert (upsampled - case["upsampled_similarity"]).abs().max() < TOLERANCE


def test_gem_path_differs_from_plain_clip(fixture: dict, checkpoint: Path) -> None:
    """The fixture would not catch a scorer that ignored the GEM path: plain CLIP must differ."""
    clip = build_gem_scorer(model_name=fixture["model_name"], pretrained=str(checkpoint), method="clip", device="cpu")
    case = next(case for case in fixture["cases"] if (case["depth"], case["iterations"]) == (4, 1))
    image = fixture["images"][case["image"]]
    ours = clip.patch_similarity(image, clip.encode_text(fixture["classes"]))
    assert (ours - case["patch_similarity"]).abs().max() > 100 * TOLERANCE
