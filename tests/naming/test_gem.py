"""GEM path pieces against hand computations, and the baselines as settings of one module."""

from __future__ import annotations

import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale
from torch import nn

from gem_sam.naming.gem import DensePathConfig, DenseVisionEncoder, SelfSelfAttention, resample_positional_embedding
from gem_sam.naming.scorer import input_size_hw

from ..conftest import TINY_CLIP_NAME


def _reference_self_self(x, attn, *, iterations, projections, normalize, inv_temp):
    """Eq. 4-7 of the paper written out per head with explicit loops (independent of the module)."""
    tokens, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    qkv = x @ attn.in_proj_weight.T + attn.in_proj_bias
    q, k, v = qkv.split(width, dim=-1)
    by_name = {"q": q, "k": k, "v": v}
    outputs = []
    for h in range(heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        value = v[:, cols]
        per_projection = []
        for name in projections:
            p = by_name[name][:, cols]
            for _ in range(iterations):
                pn = F.normalize(p, dim=-1) if normalize else p
                p = torch.softmax(pn @ pn.T * inv_temp, dim=-1) @ pn
            pn = F.normalize(p, dim=-1) if normalize else p
            per_projection.append(torch.softmax(pn @ pn.T * inv_temp, dim=-1) @ value)
        outputs.append(sum(per_projection) / len(per_projection))
    return torch.cat(outputs, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias


@pytest.mark.parametrize("iterations", [0, 1, 3])
@pytest.mark.parametrize("projections", [("q", "k", "v"), ("v",), ("k", "q")])
@pytest.mark.parametrize("normalize", [True, False])
def test_self_self_attention_matches_the_equations(iterations, projections, normalize) -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 5, 12)
    config = DensePathConfig(iterations=iterations, projections=projections, normalize=normalize)
    out = SelfSelfAttention(attn, config=config)(x)
    for b in range(2):
        # adaptive temperature (eq. 4): 1/tau = mean token norm / sqrt(head_dim)
        inv_temp = x[b].norm(dim=-1).mean() / math.sqrt(4)
        expected = _reference_self_self(
            x[b], attn, iterations=iterations, projections=projections, normalize=normalize, inv_temp=inv_temp
        )
        torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature,inv_temp", [("standard", 0.5), (0.25, 4.0)])
def test_fixed_temperatures(temperature, inv_temp) -> None:
    torch.manual_seed(1)
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 6, 8)
    out = SelfSelfAttention(attn, config=DensePathConfig(temperature=temperature))(x)
    expected = _reference_self_self(
        x[0], attn, iterations=1, projections=("q", "k", "v"), normalize=True, inv_temp=inv_temp
    )
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "segformer"}, "method"),
        ({"depth": 0}, "depth"),
        ({"iterations": -1}, "iterations"),
        ({"projections": ()}, "projections"),
        ({"projections": ("x",)}, "projections"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_config_errors_name_the_value(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DensePathConfig(**kwargs)


def test_method_presets() -> None:
    assert DensePathConfig.for_method("gem") == DensePathConfig()
    surgery = DensePathConfig.for_method("clipsurgery")
    assert (surgery.projections, surgery.normalize, surgery.temperature, surgery.iterations) == (
        ("v",),
        False,
        "standard",
        0,
    )
    assert surgery.feature_surgery and not DensePathConfig.for_method("gem").feature_surgery
    assert DensePathConfig.for_method("gem", depth=6).depth == 6
    assert DensePathConfig.for_method("clipsurgery", depth=3, feature_surgery=False).depth == 3
    assert DensePathConfig.for_method("maskclip").maskclip_variant == "official"
    assert DensePathConfig.for_method("maskclip", maskclip_variant="surgery").maskclip_variant == "surgery"


@pytest.mark.parametrize(
    "method,overrides,refused",
    [
        ("maskclip", {"depth": 3}, "depth"),  # would silently skip blocks
        ("clip", {"depth": 3}, "depth"),  # would be ignored
        ("clip", {"iterations": 2}, "iterations"),
        ("maskclip", {"iterations": 2}, "iterations"),
        ("clipsurgery", {"iterations": 1}, "iterations"),
        ("gem", {"maskclip_variant": "surgery"}, "maskclip_variant"),
        ("gem", {"feature_surgery": True}, "feature_surgery"),
    ],
)
def test_options_a_method_does_not_take_are_refused(method, overrides, refused) -> None:
    with pytest.raises(ValueError, match=f"method '{method}' does not take {refused}"):
        DensePathConfig.for_method(method, **overrides)


def test_positional_embedding_resampling() -> None:
    torch.manual_seed(0)
    table = torch.randn(1 + 4 * 4, 8)
    assert resample_positional_embedding(table, grid_hw=(4, 4)) is table
    out = resample_positional_embedding(table, grid_hw=(3, 6))
    assert out.shape == (1 + 18, 8)
    torch.testing.assert_close(out[0], table[0])  # class token untouched
    constant = torch.ones(1 + 16, 2)
    torch.testing.assert_close(resample_positional_embedding(constant, grid_hw=(5, 7)), torch.ones(1 + 35, 2))


@pytest.mark.parametrize(
    "image_hw,patch,expected",
    [
        ((480, 640), 16, (448, 592)),  # 597.3 snapped to the patch grid
        ((640, 480), 16, (592, 448)),
        ((448, 448), 14, (448, 448)),
        ((100, 100), 32, (448, 448)),
        ((1, 1), 16, (448, 448)),
        ((10, 1000), 16, (448, 44800)),
    ],
)
def test_input_size_without_a_cap(image_hw, patch, expected) -> None:
    assert input_size_hw(image_hw, short_side=448, patch_size=patch) == expected


@pytest.mark.parametrize(
    "image_hw,patch,max_long_side,expected",
    [
        ((480, 640), 16, 1792, (448, 592)),  # within the cap: unchanged
        ((448, 1792), 16, 1792, (448, 1792)),  # exactly 4:1
        ((100, 2000), 16, 1792, (96, 1792)),  # scale 0.896: 89.6 -> 96 (6 patches), 1792
        ((2000, 100), 16, 1792, (1792, 96)),
        ((10, 1000), 16, 1792, (16, 1792)),  # 17.9 -> one patch at least
        ((100, 2000), 14, 1800, (84, 1792)),  # cap rounded down to the patch: 128 patches
        ((100, 2000), 16, 448, (16, 448)),  # cap = short side: 22.4 -> one patch
    ],
)
def test_input_size_long_side_cap(image_hw, patch, max_long_side, expected) -> None:
    height, width = input_size_hw(image_hw, short_side=448, patch_size=patch, max_long_side=max_long_side)
    assert (height, width) == expected
    assert max(height, width) <= max_long_side


@pytest.fixture(scope="module")
def tiny_visual(tiny_clip_checkpoint):
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint))
    return model.eval().visual


def test_clip_method_reproduces_open_clip_tokens(tiny_visual) -> None:
    """The plain path must equal open_clip's own forward (pooled class token via ln_post @ proj)."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    encoder = DenseVisionEncoder(tiny_visual, config=DensePathConfig.for_method("clip"))
    with torch.no_grad():
        x = encoder.embed(images)
        for block in tiny_visual.transformer.resblocks:
            x = block(x)
        expected = tiny_visual.ln_post(x[:, 1:]) @ tiny_visual.proj
        pooled_open_clip = tiny_visual(images)
        pooled_ours = tiny_visual.ln_post(x[:, 0]) @ tiny_visual.proj
        features = encoder(images)
    torch.testing.assert_close(pooled_ours, pooled_open_clip, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features, expected.reshape(2, 4, 4, -1), atol=1e-5, rtol=1e-5)


@pytest.fixture
def layer_scaled_visual(tiny_visual):
    """The tiny ViT with random layer scales in its last block (CLIP's are identities, which would
    hide a missing ``ls_1`` / ``ls_2``)."""
    visual = copy.deepcopy(tiny_visual)
    last = visual.transformer.resblocks[-1]
    torch.manual_seed(3)
    last.ls_1, last.ls_2 = LayerScale(48, 1.0), LayerScale(48, 1.0)
    with torch.no_grad():
        last.ls_1.gamma.uniform_(0.2, 2.0)
        last.ls_2.gamma.uniform_(0.2, 2.0)
    return visual


@pytest.mark.parametrize("variant", ["official", "surgery"])
def test_maskclip_variants(layer_scaled_visual, variant) -> None:
    """official (MaskCLIP's code): v-path + residual, then the block's MLP; surgery: x + out_proj(v)."""
    visual = layer_scaled_visual
    torch.manual_seed(0)
    images = torch.randn(1, 3, 64, 80)
    encoder = DenseVisionEncoder(visual, config=DensePathConfig.for_method("maskclip", maskclip_variant=variant))
    last = visual.transformer.resblocks[-1]
    width = last.attn.embed_dim
    with torch.no_grad():
        x = encoder.embed(images)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        value = last.ln_1(x) @ last.attn.in_proj_weight[2 * width :].T + last.attn.in_proj_bias[2 * width :]
        tokens = x + last.ls_1.gamma * (value @ last.attn.out_proj.weight.T + last.attn.out_proj.bias)
        if variant == "official":
            tokens = tokens + last.ls_2.gamma * last.mlp(last.ln_2(tokens))
        expected = visual.ln_post(tokens[:, 1:]) @ visual.proj
        features = encoder(images)
    torch.testing.assert_close(features, expected.reshape(1, 4, 5, -1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["gem", "clip", "maskclip", "clipsurgery"])
def test_image_embedding_is_open_clips(tiny_visual, method) -> None:
    """The image embedding beside the dense features is the unchanged ViT's pooled output."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    encoder = DenseVisionEncoder(tiny_visual, config=DensePathConfig.for_method(method))
    with torch.no_grad():
        patches, image_embedding = encoder.features(images, with_image_embedding=True)
        torch.testing.assert_close(image_embedding, tiny_visual(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(patches, encoder(images), atol=1e-6, rtol=1e-6)


def test_methods_give_different_features(tiny_visual) -> None:
    torch.manual_seed(0)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = {
            method: DenseVisionEncoder(tiny_visual, config=DensePathConfig.for_method(method))(images)
            for method in ("gem", "clip", "maskclip", "clipsurgery")
        }
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)


def test_encoder_rejects_bad_input(tiny_visual) -> None:
    encoder = DenseVisionEncoder(tiny_visual, config=DensePathConfig())
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        encoder(torch.randn(1, 3, 50, 64))
    with pytest.raises(ValueError, match="exceeds the 6 blocks"):
        DenseVisionEncoder(tiny_visual, config=DensePathConfig(depth=7))
    with pytest.raises(TypeError, match="VisionTransformer"):
        DenseVisionEncoder(nn.Linear(2, 2), config=DensePathConfig())
