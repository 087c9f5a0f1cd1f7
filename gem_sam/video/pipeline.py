"""Labelling videos: keyframe masks, SAM 2 tracks with ids that last, each track named by GEM.

Per video, window by window (``tracking``): gem_sam's grid generator gives the keyframe's masks, the
tracker matches them to its tracks and propagates the tracks to the next keyframe with SAM 2's video
predictor, and GEM's similarities inside each track's masks on the naming frames are summed
(``track_names``). Frames are decoded a window at a time and the predictor's state is dropped after
each window, so memory stays flat in the video's length.

Each finished window is saved as a record (``RunStore``): the masks it wrote, its naming sums and the
tracker's state after it. A run killed at any moment and started again continues from the last finished
window, and the assembled ``tracks.json`` is the same, byte for byte, as an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..labelling.coco import categories
from ..labelling.config import LabelConfig
from ..labelling.pipeline import AutoLabeller
from ..labelling.quality import QualityControls
from ..mask_ops import decode_rle, encode_rle
from ..naming.mask_labels import MaskLabels
from ..naming.vocabulary import Vocabulary
from ..run_store import RunStore
from ..sam.stage_times import StageTimes
from .frames import VideoFrames, VideoReadError, open_video
from .track_names import NamingSums, frame_similarities, name_tracks
from .tracking import Propagator, TrackingConfig, VideoTracker, keyframes
from .vis import track_annotation, write_tracks


@dataclass(frozen=True)
class VideoConfig:
    """How videos are labelled, besides the image labelling settings."""

    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    frame_stride: int = 1  # label every K-th frame of the source
    name_every: int | None = None  # also name tracks every M frames, besides the keyframes

    def __post_init__(self) -> None:
        if self.frame_stride < 1:
            raise ValueError(f"--frame-stride {self.frame_stride} must be at least 1")
        if self.name_every is not None and self.name_every < 1:
            raise ValueError(f"--name-every {self.name_every} must be at least 1")

    def settings(self) -> dict[str, Any]:
        return {
            "keyframe_every": self.tracking.keyframe_every,
            "match_iou": self.tracking.match_iou,
            "max_lost_frames": self.tracking.max_lost_frames,
            "part_of_tracked": self.tracking.part_of_tracked,
            "frame_stride": self.frame_stride,
            "name_every": self.name_every,
        }


class VideoLabeller:
    """Labels videos with one image labeller (grid masks, GEM naming) and one propagator (SAM 2)."""

    def __init__(self, *, labeller: AutoLabeller, propagator: Propagator, config: VideoConfig = VideoConfig()) -> None:
        self.labeller = labeller
        self.propagator = propagator
        self.config = config
        self.times = StageTimes()  # keyframe masks, propagation, naming: set ``times.enabled`` to collect

    def keyframe_masks(self, frame: np.ndarray) -> list[np.ndarray]:
        """The grid generator's non-empty masks of a keyframe, [H, W] bool each, in its order."""
        return [decode_rle(r["segmentation"]) for r in self.labeller.mask_generator.generate(frame) if r["area"] > 0]

    def naming_sums(self, frame: np.ndarray, masks: dict[int, np.ndarray]) -> dict[int, NamingSums]:
        if not masks:
            return {}
        return frame_similarities(self.labeller.similarity(frame), masks, self.labeller.vocabulary)

    def naming_rule(self) -> NamingRule:
        labeller = self.labeller
        return NamingRule(labeller.vocabulary, labeller.scorer.logit_scale, labeller.config, self.config)

    def naming_offsets(self, start: int, written: int) -> list[int]:
        """Offsets in a window (from keyframe ``start``, ``written`` frames) whose frames name tracks."""
        every = self.config.name_every
        return [0] + ([o for o in range(1, written) if (start + o) % every == 0] if every else [])


def video_fingerprint(path: Path) -> str:
    """What changes when a video changes: its size and modification time, or for a frame folder each
    frame's name, size and modification time."""
    if path.is_file():
        stat = path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    digest = hashlib.sha1()
    for entry in sorted(path.iterdir()):
        if entry.is_file():
            stat = entry.stat()
            digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def window_key(video: Path, fingerprint: str, start: int) -> str:
    return f"video\0{video.resolve()}\0{fingerprint}\0window\0{start}"


@dataclass
class VideoStats:
    """What labelling one video did."""

    name: str
    frames: int = 0
    windows_resumed: int = 0
    started: int = 0
    revived: int = 0
    ended: int = 0
    parts_skipped: int = 0
    seconds: float = 0.0


def label_video(
    video_labeller: VideoLabeller, frames: VideoFrames, *, store: RunStore, progress: bool = True
) -> VideoStats:
    """Track and name one video's frames into ``store`` (window records; finished windows are reused)."""
    tracking = video_labeller.config.tracking
    tracker = VideoTracker(tracking, video_labeller.propagator)
    fingerprint = video_fingerprint(frames.path)
    starts = keyframes(len(frames), tracking.keyframe_every)
    stats = VideoStats(name=frames.name, frames=len(frames))
    begin = time.perf_counter()
    with tqdm(total=len(frames), desc=frames.name, unit="frame", disable=not progress) as bar:
        for index, start in enumerate(starts):
            key = window_key(frames.path, fingerprint, start)
            last = index + 1 == len(starts)
            end = len(frames) - 1 if last else starts[index + 1]
            if store.has(key):
                record = store.load_record(key)
                tracker.restore(record["state"])
                stats.windows_resumed += 1
                bar.update(len(record["frames"]))
                continue
            times = video_labeller.times
            with times.stage("decoding frames"):
                window = frames.read(start, end + 1)
            with times.stage("keyframe masks"):
                keyframe_masks = video_labeller.keyframe_masks(window[0])
            with times.stage("propagation"):
                result = tracker.run_window(start=start, frames=window, keyframe_masks=keyframe_masks, last=last)
            sums: dict[int, NamingSums] = {}
            with times.stage("naming"):
                for offset in video_labeller.naming_offsets(start, len(result.masks)):
                    named = video_labeller.naming_sums(window[offset], result.masks[offset])
                    for track_id, frame_sums in named.items():
                        sums[track_id] = sums[track_id] + frame_sums if track_id in sums else frame_sums
            store.save_record(
                key,
                {
                    "start": start,
                    "frames": [{str(i): encode_rle(mask) for i, mask in masks.items()} for masks in result.masks],
                    "naming": {str(i): value.to_json() for i, value in sums.items()},
                    "state": tracker.state_json(),
                    "events": {"started": result.started, "revived": result.revived, "ended": result.ended,
                               "parts_skipped": result.parts_skipped},
                },
            )  # fmt: skip
            stats.started += len(result.started)
            stats.revived += len(result.revived)
            stats.ended += len(result.ended)
            stats.parts_skipped += result.parts_skipped
            bar.update(len(result.masks))
            bar.set_postfix(tracks=len(tracker.live()))
    stats.seconds = time.perf_counter() - begin
    return stats


@dataclass
class VideoRunSummary:
    """What a video run did, for its summary."""

    videos: list[VideoStats] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (video, reason)
    tracks_written: Counter = field(default_factory=Counter)  # class -> tracks
    dropped_background: int = 0
    dropped_low_score: int = 0
    never_seen: int = 0  # tracks whose every propagated mask was empty
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        frames = sum(video.frames for video in self.videos)
        seconds = sum(video.seconds for video in self.videos)
        resumed = sum(video.windows_resumed for video in self.videos)
        out = [
            f"videos labelled: {len(self.videos)} ({frames} frames), skipped: {len(self.skipped)}"
            + (f"; {resumed} window(s) from an earlier run" if resumed else ""),
            f"tracks started: {sum(v.started for v in self.videos)}, brought back after an occlusion: "
            f"{sum(v.revived for v in self.videos)}, ended before the video's end: {sum(v.ended for v in self.videos)}"
            + (" (in this run's windows)" if resumed else ""),
            f"tracks written: {sum(self.tracks_written.values())}; dropped as background: {self.dropped_background}, "
            f"by --min-score or the quality controls: {self.dropped_low_score}, never seen: {self.never_seen}",
        ]
        if self.tracks_written:
            out.append(
                "tracks per class: " + ", ".join(f"{name} {count}" for name, count in self.tracks_written.items())
            )
        if seconds > 0:
            out.append(f"time: {seconds:.1f} s, {frames / seconds:.2f} frames per second")
        out += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return out + [f"note: {note}" for note in self.notes]


def assemble_video(
    frames: VideoFrames, *, config: VideoConfig, store: RunStore, video_id: int
) -> tuple[dict[str, Any], list[tuple[int, list[dict | None], NamingSums | None]]]:
    """The YouTube-VIS video entry, and per track (ascending id) its masks and naming sums (None for a
    track never seen on a naming frame)."""
    fingerprint = video_fingerprint(frames.path)
    starts = keyframes(len(frames), config.tracking.keyframe_every)
    rles: dict[int, list[dict | None]] = {}
    sums: dict[int, NamingSums] = {}
    position = 0
    for start in starts:
        record = store.load_record(window_key(frames.path, fingerprint, start))
        for masks in record["frames"]:
            for track_id, rle in masks.items():
                rles.setdefault(int(track_id), [None] * len(frames))[position] = rle
            position += 1
        for track_id, value in record["naming"].items():
            value = NamingSums.from_json(value)
            sums[int(track_id)] = sums[int(track_id)] + value if int(track_id) in sums else value
    entry = {
        "id": video_id,
        "file_names": frames.file_names(),
        "length": len(frames),
        "width": frames.size_hw[1],
        "height": frames.size_hw[0],
        "source": str(frames.path.resolve()),
        "frame_stride": frames.frame_stride,
        "source_frames": frames.source_indices,
        "fps": frames.fps,
    }
    tracks = [(track_id, rles[track_id], sums.get(track_id)) for track_id in sorted(rles)]
    return entry, tracks


def window_keys(frames: VideoFrames, config: VideoConfig) -> list[str]:
    fingerprint = video_fingerprint(frames.path)
    return [
        window_key(frames.path, fingerprint, start) for start in keyframes(len(frames), config.tracking.keyframe_every)
    ]


def label_videos(
    video_labeller: VideoLabeller,
    *,
    videos: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    settings: dict[str, Any],
    inputs: str | os.PathLike,
    restart: bool = False,
    progress: bool = True,
) -> VideoRunSummary:
    """Label ``videos`` (files or frame folders) into one ``tracks.json`` at ``out_path``.

    ``inputs``: the video or folder of videos the run was given (a run into the same ``--out`` with
    other inputs or settings is refused). A video that cannot be read is skipped and reported; the
    others are labelled. Killed and run again, it continues from each video's last finished window.
    """
    store = RunStore(out_path, settings=settings, restart=restart, images_dir=inputs)
    summary = VideoRunSummary()
    opened: list[VideoFrames] = []
    for path in videos:
        try:
            frames = open_video(path, frame_stride=video_labeller.config.frame_stride)
            summary.videos.append(label_video(video_labeller, frames, store=store, progress=progress))
            opened.append(frames)
        except VideoReadError as error:
            summary.skipped.append((Path(path).name, str(error)))
    write_video_run(
        opened, naming=video_labeller.naming_rule(), store=store, settings=settings, summary=summary, out_path=out_path
    )
    return summary


def kept_tracks(labels: MaskLabels, quality: QualityControls) -> set[int]:
    """Rows of ``labels`` written: not background, at least ``min_score``, at least ``min_similarity``,
    and with ``max_masks_per_image`` the highest scores of the video (ties: the older track)."""
    rows = [
        row
        for row in range(len(labels.keep))
        if bool(labels.keep[row])
        and (quality.min_similarity is None or float(labels.similarity[row]) >= quality.min_similarity)
    ]
    if quality.max_masks_per_image is not None:
        rows = sorted(rows, key=lambda row: -float(labels.score[row]))[: quality.max_masks_per_image]
    return set(rows)


@dataclass(frozen=True)
class NamingRule:
    """What naming tracks needs at the end of a run (no model): the vocabulary, the naming model's logit
    scale, the labelling settings (``min_score``, quality controls) and the video settings."""

    vocabulary: Vocabulary
    logit_scale: float
    labelling: LabelConfig
    video: VideoConfig


def write_video_run(
    videos: Sequence[VideoFrames],
    *,
    naming: NamingRule,
    store: RunStore,
    settings: dict[str, Any],
    summary: VideoRunSummary,
    out_path: str | os.PathLike,
) -> None:
    """Assemble ``tracks.json`` from the window records of ``videos``: name each track, drop the ones
    background wins or that score below ``min_score``, and prune records of videos no longer there."""
    names = naming.vocabulary.classes
    entries, annotations = [], []
    for video_id, frames in enumerate(videos, start=1):
        entry, tracks = assemble_video(frames, config=naming.video, store=store, video_id=video_id)
        entries.append(entry)
        named = {track_id: sums for track_id, _, sums in tracks if sums is not None}
        summary.never_seen += sum(1 for _, _, sums in tracks if sums is None)
        ids, labels = name_tracks(
            named, naming.vocabulary, logit_scale=naming.logit_scale, min_score=naming.labelling.min_score
        )
        row = {track_id: index for index, track_id in enumerate(ids)}
        kept = kept_tracks(labels, naming.labelling.quality)
        for track_id, rles, _ in tracks:
            if track_id not in row:
                continue
            index = row[track_id]
            if bool(labels.background[index]):
                summary.dropped_background += 1
                continue
            if index not in kept:
                summary.dropped_low_score += 1
                continue
            class_index = int(labels.class_index[index])
            summary.tracks_written[names[class_index]] += 1
            annotations.append(
                track_annotation(
                    annotation_id=len(annotations) + 1,
                    video_id=video_id,
                    category_id=class_index + 1,
                    track_id=track_id,
                    rles=rles,
                    naming={
                        "score": labels.score[index],
                        "similarity": labels.similarity[index],
                        "margin": labels.margin[index],
                        "entropy": labels.entropy[index],
                    },
                )  # fmt: skip
            )
        frames.close()
    store.prune([key for frames in videos for key in window_keys(frames, naming.video)])
    write_tracks(out_path, videos=entries, categories=categories(names), annotations=annotations, settings=settings)
