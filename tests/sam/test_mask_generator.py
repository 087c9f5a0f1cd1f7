"""Grid-point masks: same masks as segment-anything's SamAutomaticMaskGenerator, and clear errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator

from gem_sam.sam import GridMaskGenerator, MaskGeneratorConfig, build_mask_generator
from gem_sam.sam.adapters import bilinear_reach

from ..conftest import LOOSE_SETTINGS, TINY_SAM_NAME, assert_reference_parity, rgb_photo, tiny_sam


def reference_generator(sam, config: MaskGeneratorConfig) -> SamAutomaticMaskGenerator:
    return SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **config.reference_kwargs())


@pytest.fixture(scope="module")
def sam():
    return tiny_sam()


@pytest.mark.parity
@pytest.mark.parametrize(
    "photo,settings",
    [
        ("astronaut.png", {"points_per_side": 6, **LOOSE_SETTINGS}),
        (
            "coffee.png",
            {
                "points_per_side": 5,
                "pred_iou_thresh": 0.05,
                "stability_score_thresh": 0.25,
                "box_nms_thresh": 1.0,
                "points_per_batch": 7,
            },
        ),
        (
            "chelsea.png",
            {
                "points_per_side": 4,
                **LOOSE_SETTINGS,
                "crop_n_layers": 1,
                "crop_nms_thresh": 1.0,
                "min_mask_region_area": 40,
            },
        ),
    ],
)
def test_same_masks_as_segment_anything(sam, photo: str, settings: dict) -> None:
    image = rgb_photo(photo, long_side=200 if photo == "chelsea.png" else 150)
    config = MaskGeneratorConfig(**settings)
    ours = GridMaskGenerator(sam, config=config).generate(image)
    assert_reference_parity(ours, reference_generator(sam, config), image)
    assert len(ours) >= 10  # the settings really exercise the filters


def test_records_format(sam) -> None:
    image = rgb_photo("astronaut.png", long_side=120)
    records = GridMaskGenerator(sam, config=MaskGeneratorConfig(points_per_side=3, **LOOSE_SETTINGS)).generate(image)
    assert records
    for record in records:
        assert record["segmentation"]["size"] == [image.shape[0], image.shape[1]]
        assert isinstance(record["segmentation"]["counts"], str)
        x, y, w, h = record["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image.shape[1] and y + h <= image.shape[0]
        assert len(record["point_coords"]) == 1 and len(record["point_coords"][0]) == 2
        assert record["crop_box"] == [0, 0, image.shape[1], image.shape[0]]


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"points_per_side": 0}, "points_per_side"),
        ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
        ({"stability_score_thresh": -0.1}, "stability_score_thresh"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
        ({"min_mask_region_area": -5}, "min_mask_region_area"),
        ({"precision": "int8"}, "precision"),
    ],
)
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskGeneratorConfig(**settings)


def test_unknown_setting_lists_the_valid_ones(tiny_sam_checkpoint) -> None:
    with pytest.raises(TypeError, match="points_per_sid.*valid: points_per_side"):
        build_mask_generator(model_type=TINY_SAM_NAME, checkpoint=tiny_sam_checkpoint, points_per_sid=8)


def test_generator_rejects_non_rgb(sam) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        GridMaskGenerator(sam, config=MaskGeneratorConfig()).generate(np.zeros((10, 10), dtype=np.uint8))


@pytest.mark.slow  # bf16 convolutions are slow on CPUs without bf16 units
def test_bf16_autocast_runs_on_cpu(sam) -> None:
    image = rgb_photo("astronaut.png", long_side=100)
    config = MaskGeneratorConfig(points_per_side=1, precision="bf16", **LOOSE_SETTINGS)
    records = GridMaskGenerator(sam, config=config).generate(image)
    assert records, "no mask survived: the check below would hold for an empty list"
    assert all(np.isfinite(r["predicted_iou"]) and 0.0 <= r["stability_score"] <= 1.0 for r in records)


@pytest.mark.parity
@pytest.mark.slow  # compiling the encoder takes about half a minute on the CPU
def test_compiled_encoder_gives_the_same_masks(sam) -> None:
    image = rgb_photo("astronaut.png", long_side=150)
    settings = {"points_per_side": 4, **LOOSE_SETTINGS}
    compiled = GridMaskGenerator(sam, config=MaskGeneratorConfig(**settings, compile=True))
    assert compiled.adapter.encode is not GridMaskGenerator(sam, config=MaskGeneratorConfig(**settings)).adapter.encode
    assert_reference_parity(compiled.generate(image), reference_generator(sam, compiled.config), image)


@pytest.mark.parity
def test_same_masks_where_most_prompts_pass_the_iou_filter(sam) -> None:
    """The trained-like case: the IoU head's bias shifted so that 90% of the prompts have a mask above
    the default pred_iou_thresh (as with trained weights), stability loosened so that masks survive."""
    shifted = copy.deepcopy(sam)
    image = rgb_photo("coffee.png", long_side=150)
    config = MaskGeneratorConfig(points_per_side=6, stability_score_thresh=0.1, box_nms_thresh=1.0)
    probe = GridMaskGenerator(shifted, config=MaskGeneratorConfig(points_per_side=6, pred_iou_thresh=1.0))
    with torch.no_grad():
        points = probe.point_grids[0] * np.array(image.shape[:2])[None, ::-1]
        features = probe.adapter.embed(image)
        best = probe._decode(features, probe.adapter.prompt_coords(points, image.shape[:2]))[0].max(dim=1).values
        shift = config.pred_iou_thresh - float(torch.quantile(best, 0.1)) + 1e-6
        shifted.mask_decoder.iou_prediction_head.layers[-1].bias += shift
    share = float(((best + shift) > config.pred_iou_thresh).float().mean())
    assert 0.85 <= share <= 0.95

    ours = GridMaskGenerator(shifted, config=config).generate(image)
    assert_reference_parity(ours, reference_generator(shifted, config), image)
    assert len(ours) >= 10


@pytest.mark.parity
def test_same_masks_on_a_portrait_photo(sam) -> None:
    """A tall image leaves the right of SAM 1's square input as padding: the logits there are not formed."""
    image = np.ascontiguousarray(np.rot90(rgb_photo("coffee.png", long_side=150)))
    assert image.shape[0] > image.shape[1]
    config = MaskGeneratorConfig(points_per_side=5, **LOOSE_SETTINGS)
    ours = GridMaskGenerator(sam, config=config).generate(image)
    assert_reference_parity(ours, reference_generator(sam, config), image)
    assert len(ours) >= 10


@pytest.mark.parametrize(
    "rows,expected",
    [(768, 193), (1024, 256), (1023, 256), (4, 2), (1, 2), (683, 172)],  # by hand: floor((rows - 0.5)/4 - 0.5) + 2
)
def test_bilinear_reach(rows: int, expected: int) -> None:
    assert bilinear_reach(rows, source=256, target=1024) == expected
    # PyTorch's own resize: the first `rows` outputs depend on no source row past the reach; where the
    # last position is not clamped to row 0, on the last row of it too
    impulses = torch.eye(256)[:, None, :, None].expand(-1, 1, -1, 2)  # [source row, 1, 256, 2]
    resized = F.interpolate(impulses, size=(1024, 2), mode="bilinear", align_corners=False)[:, 0, :rows, 0]
    last_read = int((resized.abs().sum(dim=1) > 0).nonzero().max())  # source rows with a non-zero weight
    assert last_read + 1 == expected if rows > 2 else last_read + 1 <= expected


@pytest.mark.parametrize("input_hw", [(768, 1024), (1024, 683), (1024, 1024)])
def test_upsampling_the_read_part_equals_postprocess_masks(sam, input_hw: tuple[int, int]) -> None:
    adapter = GridMaskGenerator(sam, config=MaskGeneratorConfig()).adapter
    adapter.input_size = input_hw
    crop_hw = (input_hw[0] * 3 // 8, input_hw[1] * 3 // 8)
    low_res = torch.randn(2, 256, 256) * 5
    rows, cols = adapter.low_res_extent()
    ours = adapter.upsample(low_res[:, :rows, :cols], crop_hw)
    reference = sam.postprocess_masks(low_res[:, None], input_hw, crop_hw)[:, 0]
    torch.testing.assert_close(ours, reference, atol=0, rtol=0)
