"""Parity with SAM 2's own video predictor (apart from the id logic, which ``test_tracking.py`` checks
with shapes): random-init Hiera-T and Hiera-S of the real configs, at a 256-pixel input so that the tests
stay fast, on frames of a real photo seen through a moving crop (a pan), so that the frames differ.

The reference is ``SAM2VideoPredictor.init_state`` on a folder of the window's JPEG frames, seeded with
the same masks (``add_new_mask`` on the first frame) and ``propagate_in_video`` with its defaults. Masks
may differ only where the criterion of the image parity tests allows: at pixels whose reference logit
lies within float rounding of the threshold (``gem_sam.sam.rounding``), or, where two tracks' masks would
overlap, at pixels whose two highest reference logits are within rounding of each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gem_sam.images import load_image
from gem_sam.sam.adapters import backbone_feature_sizes
from gem_sam.sam.rounding import differing_pixels, logit_tolerance
from gem_sam.sam.sam2_model import build_sam2_model
from gem_sam.video.propagation import Sam2Propagator
from gem_sam.video.tracking import TrackingConfig, VideoTracker

from ..conftest import scale_mask_logits, small_photo
from ..region_masks import region_masks

IMAGE_SIZE = 256


def video_model(model_type: str):
    """``scaled_sam2``'s weights in a SAM2VideoPredictor at a 256-pixel input, with the object-score head
    leaning to "an object is there" as a trained model's does for a visible object (random weights may
    declare every object gone after the first frame, which would leave nothing to compare)."""
    torch.manual_seed(0)
    model = build_sam2_model(model_type, video=True, image_size=IMAGE_SIZE)
    scale_mask_logits(model.sam_mask_decoder)
    head = model.sam_mask_decoder.pred_obj_score_head
    with torch.no_grad():
        (head.layers[-1] if hasattr(head, "layers") else head).bias.add_(5.0)
    return model


def pan(folder: Path, *, photo: str = "astronaut.png", frames: int = 6, step: int = 6) -> Path:
    """A folder of JPEG frames ``00000.jpg``, ... : a 160x120 window moving right over a real photo."""
    folder.mkdir(parents=True, exist_ok=True)
    image = small_photo(photo, long_side=240).convert("RGB")
    for index in range(frames):
        image.crop((index * step, 20, index * step + 160, 140)).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


def reference_logits(model, folder: Path, seeds: dict[int, np.ndarray]) -> list[dict[int, torch.Tensor]]:
    """SAM2VideoPredictor's own logits for each frame of the folder and each seeded object."""
    state = model.init_state(str(folder))
    for track_id, mask in seeds.items():
        model.add_new_mask(state, frame_idx=0, obj_id=track_id, mask=mask)
    out = []
    for _, obj_ids, logits in model.propagate_in_video(state):
        out.append({int(obj_id): logits[index, 0].float() for index, obj_id in enumerate(obj_ids)})
    return out


@pytest.fixture(scope="module")
def hiera_t():
    return video_model("sam2.1_hiera_t")


def object_seeds(folder: Path) -> dict[int, np.ndarray]:
    """Object-like masks of the first frame (graph-based regions of the photo), as seeds 1, 2, 3."""
    masks = region_masks(load_image(sorted(folder.iterdir())[0]), most=3)
    return {track_id: mask for track_id, mask in enumerate(masks[:3], start=1)}


@pytest.mark.parity
@pytest.mark.parametrize("model_type", ["sam2.1_hiera_t", pytest.param("sam2.1_hiera_s", marks=pytest.mark.slow)])
def test_propagation_equals_the_video_predictor(tmp_path: Path, hiera_t, model_type: str) -> None:
    model = hiera_t if model_type == "sam2.1_hiera_t" else video_model(model_type)
    folder = pan(tmp_path / "pan")
    seeds = object_seeds(folder)
    frames = [load_image(path) for path in sorted(folder.iterdir())]
    ours = dict(Sam2Propagator(model).propagate(frames, seeds))
    reference = reference_logits(model, folder, seeds)
    assert len(ours) == len(reference) == len(frames)
    explained = 0
    for offset, expected in enumerate(reference):
        assert sorted(ours[offset]) == sorted(expected) == [1, 2, 3]
        for track_id, logits in expected.items():
            near, unexplained = differing_pixels(ours[offset][track_id] > 0, logits, 0.0)
            assert unexplained == 0, (offset, track_id, unexplained)
            explained += near
    # not degenerate: masks, not all or nothing, that change from frame to frame as the view pans
    nontrivial = [
        (offset, track_id)
        for offset, expected in enumerate(reference)
        for track_id, logits in expected.items()
        if 0 < int((logits > 0).sum()) < logits.numel()
    ]
    assert len(nontrivial) >= len(seeds) + 1, nontrivial
    assert any(not torch.equal(reference[0][t] > 0, reference[1][t] > 0) for t in seeds)


@pytest.mark.parity
def test_a_window_of_the_tracker_writes_the_predictors_masks(tmp_path: Path, hiera_t) -> None:
    """The tracker's window from a keyframe: its seeds propagated by the reference, overlaps resolved
    (the highest logit wins), are what it writes on frame 0 and every frame before the next keyframe."""
    folder = pan(tmp_path / "pan", frames=6)
    frames = [load_image(path) for path in sorted(folder.iterdir())]
    keyframe_masks = list(object_seeds(folder).values())
    tracker = VideoTracker(TrackingConfig(keyframe_every=5, part_of_tracked=1.0), Sam2Propagator(hiera_t))
    result = tracker.run_window(start=0, frames=frames, keyframe_masks=keyframe_masks, last=False)
    assert sorted(result.seeds) == [1, 2, 3] and len(result.masks) == 5  # frames 0-4; frame 5 is the next keyframe
    reference = reference_logits(hiera_t, folder, result.seeds)
    for offset, written in enumerate(result.masks):
        stacked = torch.stack([reference[offset][track_id] for track_id in sorted(reference[offset])])
        top2 = stacked.topk(2, dim=0).values
        tie = (top2[0] - top2[1]).abs() <= logit_tolerance(stacked).max()  # two tracks within rounding
        winner = stacked.argmax(dim=0)
        for index, track_id in enumerate(sorted(reference[offset])):
            expected = (winner == index) & (stacked[index] > 0)
            ours = torch.from_numpy(written.get(track_id, np.zeros(expected.shape, dtype=bool)))
            near_zero = stacked[index].abs() <= logit_tolerance(stacked[index])
            unexplained = (ours != expected) & ~tie & ~near_zero
            assert int(unexplained.sum()) == 0, (offset, track_id)
        assert any(mask.any() for mask in written.values())


@pytest.mark.parity
def test_keyframe_masks_equal_the_automatic_generators_at_the_video_models_input_size(hiera_t) -> None:
    """Keyframe masks come from gem_sam's grid generator on the same SAM2VideoPredictor's weights at its
    own input size; sam2's automatic generator gives the same masks there (its image predictor told the
    backbone's feature sizes of a 256-pixel input, ``backbone_feature_sizes``)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from gem_sam.sam import GridMaskGenerator, Sam2GeneratorConfig

    from ..conftest import LOOSE_SETTINGS, assert_reference_parity, rgb_photo

    image = rgb_photo("chelsea.png", long_side=160)
    config = Sam2GeneratorConfig(points_per_side=5, **LOOSE_SETTINGS)
    ours = GridMaskGenerator(hiera_t, config=config).generate(image)
    reference = SAM2AutomaticMaskGenerator(hiera_t, output_mode="coco_rle", **config.reference_kwargs())
    reference.predictor._bb_feat_sizes = backbone_feature_sizes(IMAGE_SIZE)
    assert_reference_parity(ours, reference, image)
    assert len(ours) >= 10
