"""Stability bounds from low-resolution logits: they never drop a mask whose full-resolution stability
score passes, they do drop masks that clearly fail, and the generator's masks stay the reference's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import calculate_stability_score

from gem_sam.sam import GridMaskGenerator, MaskGeneratorConfig, grid_generator
from gem_sam.sam.stability_bounds import bilinear_sources, may_pass_stability

from ..conftest import assert_reference_parity, rgb_photo, tiny_sam


@pytest.fixture(scope="module")
def sam():
    return tiny_sam()


def read_sources(source: int, target: int, *, scale: float | None = None) -> list[set[int]]:
    """For each of ``target`` outputs of PyTorch's own bilinear resize, the source rows with a non-zero weight."""
    impulses = torch.eye(source)[:, None, :, None].expand(-1, 1, -1, 2)  # [source row, 1, source, 2]
    if scale is None:
        resized = F.interpolate(impulses, size=(target, 2), mode="bilinear", align_corners=False)
    else:
        resized = F.interpolate(impulses, scale_factor=(1 / scale, 1.0), mode="bilinear", align_corners=False)
    weights = resized[:, 0, :, 0]  # [source row, output row]
    return [set(weights[:, row].nonzero()[:, 0].tolist()) for row in range(target)]


@pytest.mark.parametrize(
    "source,target,scale",
    [
        (256, 1024, 0.25),
        (256, 480, None),
        (768, 480, None),
        (1024, 683, None),
        (256, 37, None),
        (7, 1000, None),
        (256, 256, None),
    ],
)
def test_sources_cover_every_row_the_resize_reads(source: int, target: int, scale: float | None) -> None:
    sources = bilinear_sources(source, target, scale=scale)
    read = read_sources(source, target, scale=scale)
    assert len(sources.first) == len(read) == target
    for row, rows_read in enumerate(read):
        assert rows_read and rows_read <= set(range(sources.first[row], sources.last[row] + 1)), row
    assert int((sources.last - sources.first).max()) <= 2  # windows of at most three rows: bounds stay tight


@pytest.mark.parametrize("input_hw,crop_hw", [((768, 1024), (150, 200)), ((1024, 683), (200, 133))])
def test_sam1_sources_cover_its_upsampling(sam, input_hw: tuple[int, int], crop_hw: tuple[int, int]) -> None:
    """Through both of SAM 1's resizes: each output row reads only the low-resolution rows its sources name."""
    adapter = GridMaskGenerator(sam, config=MaskGeneratorConfig()).adapter
    adapter.input_size = input_hw
    rows, cols = adapter.low_res_extent()
    row_sources, col_sources = adapter.resize_sources(crop_hw)
    for axis, (count, sources) in enumerate([(rows, row_sources), (cols, col_sources)]):
        impulses = torch.zeros(count, rows, cols)
        index = torch.arange(count)
        if axis == 0:
            impulses[index, index, :] = 1.0
        else:
            impulses[index, :, index] = 1.0
        upsampled = adapter.upsample(impulses, crop_hw)  # [impulse, H, W]
        reads = upsampled.abs().amax(dim=2 - axis) > 0  # [impulse, output row (column)]
        for output in range(crop_hw[axis]):
            read = set(reads[:, output].nonzero()[:, 0].tolist())
            assert read and read <= set(range(sources.first[output], sources.last[output] + 1)), (axis, output)


def object_like_logits(count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """[count, side, side] logits of blobs with soft edges, as a trained SAM gives: positive inside an
    ellipse, falling off at varied steepness (steep edges make stable masks, shallow ones unstable)."""
    y, x = torch.meshgrid(
        torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij"
    )
    centres = torch.rand(count, 2, generator=generator) * side * 0.6 + side * 0.2
    radii = torch.rand(count, 2, generator=generator) * side * 0.25 + 3
    steepness = torch.exp(torch.rand(count, generator=generator) * 7 - 5)  # log-uniform in [0.007, 7.4]
    distance = ((y - centres[:, 0, None, None]) / radii[:, 0, None, None]) ** 2 + (
        (x - centres[:, 1, None, None]) / radii[:, 1, None, None]
    ) ** 2
    return (1 - distance.sqrt()) * steepness[:, None, None] * 10


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, 0.95])
def test_bounds_never_drop_a_mask_that_passes(sam, threshold: float) -> None:
    adapter = GridMaskGenerator(sam, config=MaskGeneratorConfig()).adapter
    adapter.input_size = (768, 1024)
    crop_hw = (240, 320)
    rows, cols = adapter.low_res_extent()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(40, 256, 256, generator=generator) * 3
    blobs = object_like_logits(80, 256, generator)
    low_res = torch.cat([noise, blobs])[:, :rows, :cols]
    exact = calculate_stability_score(adapter.upsample(low_res, crop_hw), 0.0, 1.0)
    kept = may_pass_stability(
        low_res, *adapter.resize_sources(crop_hw), mask_threshold=0.0, offset=1.0, score_threshold=threshold
    )
    passing = exact >= threshold
    assert passing.any() and (~passing).any()  # both kinds are there to be judged
    assert kept[passing].all()  # never a passing mask dropped
    # pixel noise is the bounds' worst case (every window straddles the levels); on object-like masks
    # they are tight enough to pay: four in five masks 0.1 or more below the threshold are dropped
    clearly_failing = (exact < threshold - 0.1)[len(noise) :]
    assert clearly_failing.sum() >= 5 and (~kept[len(noise) :][clearly_failing]).float().mean() >= 0.8


@pytest.mark.parity
def test_same_masks_where_the_bounds_drop_most_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounds drop masks before upsampling, and the masks that survive are still the reference's.

    Random-init logits are pixel noise, whose windows straddle every level, so the bounds decide only
    masks whose logits never reach the levels: here the second and third mask outputs, whose scaling is
    taken back (their logits stay near 0, stability 0), while the first output's masks compete."""
    sam = tiny_sam()
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps[2:]:
            mlp.layers[-1].weight.div_(40.0)
    dropped = []

    def counting(*args, **kwargs) -> torch.Tensor:
        kept = may_pass_stability(*args, **kwargs)
        dropped.append(int((~kept).sum()))
        return kept

    monkeypatch.setattr(grid_generator, "may_pass_stability", counting)
    image = rgb_photo("astronaut.png", long_side=160)
    config = MaskGeneratorConfig(
        points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.15, box_nms_thresh=1.0
    )
    ours = GridMaskGenerator(sam, config=config).generate(image)
    reference = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **config.reference_kwargs())
    assert_reference_parity(ours, reference, image)
    assert sum(dropped) >= 2 * 64 and len(ours) >= 10, (sum(dropped), len(ours))
