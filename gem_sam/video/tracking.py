"""Track ids that last: keyframe masks matched to live tracks, propagation window by window.

The video is cut into windows at keyframes (frame 0 and every ``keyframe_every`` frames). A window runs
from its keyframe k to the next keyframe e (the last frame, for the last window), and writes frames k to
e - 1 (to e, for the last). On keyframe k:

1. **Matching.** Each keyframe mask (gem_sam's grid masks of that frame) is compared with every live
   track's mask on k, the one the previous window propagated there. Pairs with mask IoU of at least
   ``match_iou`` are matched greedily, highest IoU first (ties: the older track), one to one; a matched
   mask keeps the track's id.
2. **Occlusion.** A track whose propagated mask on k is empty is *lost*: it is not propagated, but an
   unmatched keyframe mask that overlaps its last seen mask (IoU of at least ``match_iou``) brings it back
   with its id, and it is written again from that keyframe on. A track that has been empty for more than
   ``max_lost_frames`` frames in a row ends, so that number should span the occlusions to bridge plus
   the wait for the next keyframe.
3. **New tracks.** Every other keyframe mask starts a track with a new id, unless ``part_of_tracked`` of
   its area or more lies inside the masks already seeded on k: that is a part of a tracked object (SAM's
   grid gives wholes and parts), not a new one.
4. **Seeds.** Every track is seeded on k with a mask and propagated through the window
   (``Propagator``): a matched or revived track with its keyframe mask, so drift is corrected at every
   keyframe; a live track that no keyframe mask matched with its own propagated mask, so it goes on.
   What a keyframe writes for a track is what the propagator gives on its first frame for that seed.

Masks of two tracks never overlap in the output: a pixel claimed by several tracks goes to the one with
the highest logit there, and on a tie to the older track (the smallest id), as SAM 2's own
non-overlapping constraint decides.

Masks are [H, W] bool arrays; logits [H, W] float tensors (a mask is ``logits > 0``); frames are the
video's kept frames, numbered from 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ..mask_ops import decode_rle, encode_rle


class Propagator(Protocol):
    def propagate(
        self, frames: Sequence[np.ndarray], seeds: Mapping[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, torch.Tensor]]]: ...


@dataclass(frozen=True)
class TrackingConfig:
    """How tracks are matched, started and ended."""

    keyframe_every: int = 15  # frames from one keyframe to the next
    match_iou: float = 0.5  # mask IoU at which a keyframe mask keeps a track's id
    max_lost_frames: int = 30  # a track empty for more than this many frames in a row ends
    part_of_tracked: float = 0.5  # share of a keyframe mask inside seeded masks that makes it a part, not a track

    def __post_init__(self) -> None:
        if self.keyframe_every < 1:
            raise ValueError(f"--keyframe-every {self.keyframe_every} must be at least 1")
        if not 0.0 < self.match_iou <= 1.0:
            raise ValueError(f"--match-iou {self.match_iou:g} must lie in (0, 1]")
        if self.max_lost_frames < 0:
            raise ValueError(f"--max-lost-frames {self.max_lost_frames} must be 0 or more")
        if not 0.0 < self.part_of_tracked <= 1.0:
            raise ValueError(f"part_of_tracked {self.part_of_tracked:g} must lie in (0, 1]")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def resolve_overlaps(logits: Mapping[int, torch.Tensor]) -> dict[int, np.ndarray]:
    """{track id: [H, W] logits} -> {track id: [H, W] bool}, masks that never overlap: each pixel goes to
    the track with the highest logit there (ties: the smallest id) when that logit is above 0."""
    if not logits:
        return {}
    ids = sorted(logits)
    stacked = torch.stack([logits[track_id] for track_id in ids])  # [T, H, W], ascending ids
    winner = stacked.argmax(dim=0)  # the first of equal maxima: the smallest id
    positive = stacked.gather(0, winner[None])[0] > 0
    return {track_id: ((winner == index) & positive).numpy() for index, track_id in enumerate(ids)}


def greedy_matches(
    masks: Sequence[np.ndarray], tracks: Sequence[tuple[int, np.ndarray]], *, threshold: float
) -> dict[int, int]:
    """Keyframe mask index -> track id, one to one: pairs of IoU >= ``threshold``, highest IoU first
    (ties: the smaller track id, then the earlier mask)."""
    pairs = [
        (-mask_iou(mask, track_mask), track_id, index)
        for index, mask in enumerate(masks)
        for track_id, track_mask in tracks
    ]
    matches: dict[int, int] = {}
    used: set[int] = set()
    for negative_iou, track_id, index in sorted(pairs):
        if -negative_iou >= threshold and index not in matches and track_id not in used:
            matches[index] = track_id
            used.add(track_id)
    return matches


@dataclass
class Track:
    """One track: where it was seen, and its masks for the next keyframe."""

    track_id: int
    first_frame: int
    last_frame: int = -1  # the last frame with a non-empty written mask (-1: none yet)
    lost_since: int | None = None  # the first frame of its current run of empty masks
    mask: np.ndarray | None = None  # its propagated mask on the next keyframe (None: lost there)
    last_mask: np.ndarray | None = None  # its last non-empty written mask, to bring it back after an occlusion
    ended: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "lost_since": self.lost_since,
            "mask": encode_rle(self.mask) if self.mask is not None else None,
            "last_mask": encode_rle(self.last_mask) if self.last_mask is not None else None,
            "ended": self.ended,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Track:
        return cls(
            track_id=data["track_id"],
            first_frame=data["first_frame"],
            last_frame=data["last_frame"],
            lost_since=data["lost_since"],
            mask=decode_rle(data["mask"]) if data["mask"] is not None else None,
            last_mask=decode_rle(data["last_mask"]) if data["last_mask"] is not None else None,
            ended=data["ended"],
        )


@dataclass
class WindowResult:
    """What one window wrote: per written frame, {track id: non-empty mask}; and what happened."""

    start: int
    masks: list[dict[int, np.ndarray]]
    seeds: dict[int, np.ndarray]  # what each track was seeded with on the keyframe
    raw_logits: list[dict[int, torch.Tensor]] | None = None  # the propagator's own output (kept when asked)
    started: list[int] = field(default_factory=list)
    revived: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    parts_skipped: int = 0


@dataclass
class VideoTracker:
    """Tracks of one video, advanced a window at a time (see the module docstring)."""

    config: TrackingConfig
    propagator: Propagator
    tracks: dict[int, Track] = field(default_factory=dict)
    next_id: int = 1

    def live(self) -> list[Track]:
        return [track for track in self.tracks.values() if not track.ended and track.mask is not None]

    def lost(self) -> list[Track]:
        return [track for track in self.tracks.values() if not track.ended and track.mask is None]

    def run_window(
        self, *, start: int, frames: Sequence[np.ndarray], keyframe_masks: Sequence[np.ndarray], last: bool,
        keep_logits: bool = False,
    ) -> WindowResult:  # fmt: skip
        """Match and seed on keyframe ``start`` (``frames[0]``), propagate through ``frames`` (up to and
        including the next keyframe unless ``last``), and write the window's frames."""
        seeds, started, revived, parts = self._seed(start, keyframe_masks)
        result = WindowResult(start=start, masks=[], seeds=dict(seeds), started=started, revived=revived)
        result.parts_skipped = parts
        if keep_logits:
            result.raw_logits = []
        written = len(frames) if last else len(frames) - 1
        for offset, logits in self.propagator.propagate(frames, seeds):
            if keep_logits:
                result.raw_logits.append(logits)
            masks = resolve_overlaps(logits)
            frame = start + offset
            if offset < written:
                result.masks.append({track_id: mask for track_id, mask in masks.items() if mask.any()})
                self._observe(frame, masks, result)
            else:  # the next keyframe: what each track brings to its matching
                for track_id, mask in masks.items():
                    self.tracks[track_id].mask = mask if mask.any() else None
        if last:
            for track in self.tracks.values():
                track.mask = None
        return result

    def _seed(
        self, keyframe: int, keyframe_masks: Sequence[np.ndarray]
    ) -> tuple[dict[int, np.ndarray], list[int], list[int], int]:
        config = self.config
        live, lost = self.live(), self.lost()
        matched = greedy_matches(keyframe_masks, [(t.track_id, t.mask) for t in live], threshold=config.match_iou)
        seeds = {track_id: keyframe_masks[index] for index, track_id in matched.items()}
        for track in live:
            seeds.setdefault(track.track_id, track.mask)
        unmatched = [index for index in range(len(keyframe_masks)) if index not in matched]
        back = greedy_matches(
            [keyframe_masks[index] for index in unmatched],
            [(t.track_id, t.last_mask) for t in lost if t.last_mask is not None],
            threshold=config.match_iou,
        )
        revived = []
        for position, track_id in back.items():
            seeds[track_id] = keyframe_masks[unmatched[position]]
            revived.append(track_id)
        started, parts = [], 0
        covered = np.zeros(keyframe_masks[0].shape, dtype=bool) if keyframe_masks else None
        for seed in seeds.values():
            covered |= seed
        for position, index in enumerate(unmatched):
            if position in back:
                continue
            mask = keyframe_masks[index]
            if not mask.any() or (mask & covered).sum() >= config.part_of_tracked * mask.sum():
                parts += 1
                continue
            covered |= mask
            track = Track(track_id=self.next_id, first_frame=keyframe)
            self.tracks[track.track_id] = track
            self.next_id += 1
            seeds[track.track_id] = mask
            started.append(track.track_id)
        for track in self.tracks.values():
            if track.track_id not in seeds:
                track.mask = None
        return dict(sorted(seeds.items())), started, revived, parts

    def _observe(self, frame: int, masks: Mapping[int, np.ndarray], result: WindowResult) -> None:
        """Update each track with its written mask on ``frame`` (absent: empty); end tracks lost too long."""
        for track in self.tracks.values():
            if track.ended:
                continue
            mask = masks.get(track.track_id)
            if mask is not None and mask.any():
                track.last_frame, track.lost_since, track.last_mask = frame, None, mask
                continue
            if track.lost_since is None:
                track.lost_since = frame
            if frame - track.lost_since + 1 > self.config.max_lost_frames:
                track.ended, track.mask, track.last_mask = True, None, None
                result.ended.append(track.track_id)

    def state_json(self) -> dict[str, Any]:
        """The tracker's state between windows (for resuming after the window that wrote it)."""
        return {"next_id": self.next_id, "tracks": [track.to_json() for track in self.tracks.values()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.next_id = state["next_id"]
        self.tracks = {data["track_id"]: Track.from_json(data) for data in state["tracks"]}


def keyframes(length: int, every: int) -> list[int]:
    """The keyframes of a video of ``length`` kept frames: 0, every, 2 * every, ..."""
    return list(range(0, length, every))
