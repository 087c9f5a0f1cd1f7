"""The id logic, apart from SAM: a synthetic video with known shapes, through the tracker's interface,
with a propagator whose masks follow the shapes (not SAM 2; its parity is ``test_video_parity.py``).

Four discs over 40 frames, keyframes every 5 frames:
- A moves right the whole time; B moves down and leaves the frame at frame 18 (ended afterwards);
- C is hidden behind an occluder on frames 13-16 (keyframe 15 included) and comes back with its id at
  keyframe 20 (a track lost on a keyframe is not propagated; the next keyframe that finds it brings it
  back, so ``max_lost_frames`` must span the occlusion and the wait for that keyframe);
- D appears at frame 22 and gets a new id at the next keyframe, 25.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from gem_sam.video.tracking import TrackingConfig, VideoTracker, greedy_matches, keyframes, resolve_overlaps

SIZE_HW = (60, 80)
LENGTH = 40


@dataclass(frozen=True)
class Frame:
    index: int


def disc(center_yx: tuple[float, float], radius: float = 6.0) -> np.ndarray:
    rows, cols = np.mgrid[: SIZE_HW[0], : SIZE_HW[1]]
    return (rows - center_yx[0]) ** 2 + (cols - center_yx[1]) ** 2 <= radius**2


def shapes_at(frame: int) -> dict[str, np.ndarray]:
    """The visible shapes of a frame (name -> mask)."""
    visible = {"A": disc((15, 8 + frame)), "C": disc((45, 60))}
    if frame < 18:
        visible["B"] = disc((30 + 2 * frame, 30))
    if 13 <= frame <= 16:
        del visible["C"]  # occluded
    if frame >= 22:
        visible["D"] = disc((40, 20 + (frame - 22) * 0.5))
    return {name: mask for name, mask in visible.items() if mask.any()}


class ShapePropagator:
    """Follows, through a window, the shape each seed overlaps most on the window's first frame."""

    def __init__(self) -> None:
        self.windows: list[tuple[int, dict[int, np.ndarray]]] = []

    def propagate(self, frames, seeds):
        start = frames[0].index
        self.windows.append((start, dict(seeds)))
        first = shapes_at(start)
        followed = {}
        for track_id, seed in seeds.items():
            overlaps = {name: (seed & mask).sum() for name, mask in first.items()}
            followed[track_id] = max(overlaps, key=overlaps.get) if overlaps and max(overlaps.values()) else None
        for offset, frame in enumerate(frames):
            shapes = shapes_at(frame.index)
            logits = {}
            for track_id, name in followed.items():
                mask = shapes.get(name, np.zeros(SIZE_HW, dtype=bool))
                logits[track_id] = torch.where(torch.from_numpy(mask), 10.0, -10.0)
            yield offset, logits


def run_tracker(config: TrackingConfig) -> tuple[VideoTracker, list[dict[int, np.ndarray]]]:
    tracker = VideoTracker(config, ShapePropagator())
    starts = keyframes(LENGTH, config.keyframe_every)
    written = []
    for index, start in enumerate(starts):
        last = index + 1 == len(starts)
        end = LENGTH - 1 if last else starts[index + 1]
        frames = [Frame(i) for i in range(start, end + 1)]
        keyframe_masks = list(shapes_at(start).values())
        result = tracker.run_window(start=start, frames=frames, keyframe_masks=keyframe_masks, last=last)
        written += result.masks
    return tracker, written


def ids_of(written: list[dict[int, np.ndarray]]) -> dict[str, set[int]]:
    """Per shape, the track ids whose masks cover it on the frames it is visible."""
    out: dict[str, set[int]] = {}
    for frame, masks in enumerate(written):
        for name, shape in shapes_at(frame).items():
            for track_id, mask in masks.items():
                if (mask & shape).sum() > 0.5 * shape.sum():
                    out.setdefault(name, set()).add(track_id)
    return out


def test_ids_last_through_motion_occlusion_exits_and_entries() -> None:
    tracker, written = run_tracker(TrackingConfig(keyframe_every=5, match_iou=0.5, max_lost_frames=10))
    assert len(written) == LENGTH
    ids = ids_of(written)
    assert {name: len(found) for name, found in ids.items()} == {"A": 1, "B": 1, "C": 1, "D": 1}, ids
    (a,), (b,), (c,), (d,) = ids["A"], ids["B"], ids["C"], ids["D"]
    assert len({a, b, c, d}) == 4
    # every visible frame of each shape carries its id (C not on its hidden frames, D from keyframe 25 on)
    for frame, masks in enumerate(written):
        shapes = shapes_at(frame)
        assert (a in masks) == ("A" in shapes)
        assert (c in masks) == ("C" in shapes and not 13 <= frame < 20)  # lost 13-16, back at keyframe 20
        assert (d in masks) == (frame >= 25)
        assert (b in masks) == ("B" in shapes)
    assert tracker.tracks[d].first_frame == 25
    assert tracker.tracks[b].ended and tracker.tracks[b].last_frame == 17  # left at 18, ended after 10 empty frames
    assert not tracker.tracks[c].ended and tracker.tracks[c].last_frame == LENGTH - 1
    assert not any(tracker.tracks[i].ended for i in (a, c, d))


def test_a_track_lost_for_longer_than_allowed_ends_and_comes_back_as_new() -> None:
    """With max_lost_frames 6, C's 7 frames without a mask (hidden 13-16, then not propagated until keyframe
    20) end its track; when keyframe 20 finds it, it is a new track."""
    tracker, written = run_tracker(TrackingConfig(keyframe_every=5, match_iou=0.5, max_lost_frames=6))
    ids = ids_of(written)
    assert len(ids["C"]) == 2 and len(ids["A"]) == 1


def test_masks_of_two_tracks_never_overlap() -> None:
    logits = {
        2: torch.tensor([[5.0, 1.0, -1.0, 3.0]]),
        1: torch.tensor([[4.0, 2.0, -2.0, 3.0]]),  # a tie at the last pixel: the older track (1) wins
        3: torch.tensor([[-1.0, -1.0, -0.5, -1.0]]),
    }
    masks = resolve_overlaps(logits)
    assert masks[1].tolist() == [[False, True, False, True]]
    assert masks[2].tolist() == [[True, False, False, False]]
    assert masks[3].tolist() == [[False, False, False, False]]  # highest at pixel 2 but not above 0


def test_greedy_matching_takes_the_highest_iou_first() -> None:
    a, b = disc((20, 20)), disc((20, 23))
    other = disc((45, 60))
    # mask 0 overlaps track 7 (IoU 1) and track 5 (partly); mask 1 only track 5
    assert greedy_matches([a, b, other], [(5, b), (7, a)], threshold=0.5) == {0: 7, 1: 5}
    assert greedy_matches([a], [(5, other)], threshold=0.5) == {}


@pytest.mark.parametrize("kwargs", [{"keyframe_every": 0}, {"match_iou": 0.0}, {"max_lost_frames": -1}])
def test_bad_tracking_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=list(kwargs)[0].replace("_", "-")):
        TrackingConfig(**kwargs)
