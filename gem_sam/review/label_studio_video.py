"""A ``tracks.json`` as Label Studio video tasks: each track a ``VideoRectangle`` region, to review.

    OUT/label_config.xml   a Video with a VideoRectangle and Labels of the run's classes
    OUT/tasks.json         one task per video: ``data.video`` (a URL Label Studio serves) and one
                           prediction with a videorectangle region per track
    OUT/videos/<video>.mp4 frame folders encoded as videos (Label Studio plays video files; needs ffmpeg)

Each region's ``sequence`` holds the box of the track's mask on every labelled frame it is seen on, as
keyframes: frames are 1-based (Label Studio's), x, y, width and height are percentages of the video's
width and height, and ``enabled`` is false on the last frame of each run of frames the track is seen on
(Label Studio then shows nothing until its next keyframe). With ``frame_stride`` K, the labelled frames
are 1, K + 1, 2K + 1, ... of a video file. The prediction's ``score`` is the lowest track score of the
video, so Label Studio's sort by prediction score brings the least sure videos first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from ..export.mot import video_folder_name
from ..export.stats import ExportStats
from ..export.video_encoding import DEFAULT_FPS, encode_frames
from .label_studio import image_url

VIDEO_NAME = "video"  # the Video object, fed from data.video
BOX_NAME = "box"  # the VideoRectangle control
LABELS_NAME = "videoLabels"


def video_label_config(classes: list[str], *, fps: float) -> str:
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in classes)
    return (
        "<View>\n"
        f'  <Labels name="{LABELS_NAME}" toName="{VIDEO_NAME}" allowEmpty="true">\n{labels}\n  </Labels>\n'
        f'  <Video name="{VIDEO_NAME}" value="${VIDEO_NAME}" framerate="{fps:g}"/>\n'
        f'  <VideoRectangle name="{BOX_NAME}" toName="{VIDEO_NAME}"/>\n'
        "</View>\n"
    )


def track_sequence(
    track: dict[str, Any], *, frame_numbers: list[int], size_wh: tuple[int, int], fps: float
) -> list[dict[str, Any]]:
    """The keyframes of one track: its box on each frame it is seen on (percentages, 1-based frames)."""
    width, height = size_wh
    seen = [position for position, box in enumerate(track["bboxes"]) if box is not None]
    sequence = []
    for index, position in enumerate(seen):
        x, y, w, h = track["bboxes"][position]
        run_ends = index + 1 == len(seen) or seen[index + 1] != position + 1
        frame = frame_numbers[position]
        sequence.append(
            {
                "frame": frame,
                "enabled": not run_ends,
                "rotation": 0,
                "x": 100.0 * x / width,
                "y": 100.0 * y / height,
                "width": 100.0 * w / width,
                "height": 100.0 * h / height,
                "time": (frame - 1) / fps,
            }
        )
    return sequence


def label_studio_video_tasks(
    tracks_data: dict[str, Any],
    *,
    out_dir: Path,
    final_dir: Path,
    document_root: Path | None,
    url_prefix: str | None,
    fps: float = DEFAULT_FPS,
) -> list[dict[str, Any]]:
    """One task per video; frame folders are encoded into ``out_dir/videos`` (which becomes
    ``final_dir/videos``, the path the URL names)."""
    names = {category["id"]: category["name"] for category in tracks_data["categories"]}
    tasks = []
    for video in tracks_data["videos"]:
        name = video_folder_name(video)
        source = Path(video["source"])
        if source.is_file():
            path, rate = source, video.get("fps") or fps
            numbers = [index + 1 for index in video["source_frames"]]
            width, height = video["width"], video["height"]
        else:
            relative = Path("videos") / f"{name}.mp4"
            width, height = encode_frames(video, out_dir / relative, fps=fps)
            path, rate, numbers = final_dir / relative, fps, list(range(1, video["length"] + 1))
        root = document_root if document_root is not None else (path.parent if source.is_file() else final_dir)
        url = image_url(path, document_root=root, url_prefix=url_prefix, file_name=path.name)
        tracks = [track for track in tracks_data["annotations"] if track["video_id"] == video["id"]]
        frames_count = numbers[-1] if numbers else 0
        regions = [
            {
                "id": f"track{track['track_id']}",
                "from_name": BOX_NAME,
                "to_name": VIDEO_NAME,
                "type": "videorectangle",
                "score": float(track["score"]),
                "value": {
                    "sequence": track_sequence(track, frame_numbers=numbers, size_wh=(width, height), fps=rate),
                    "labels": [names[track["category_id"]]],
                    "framesCount": frames_count,
                    "duration": frames_count / rate,
                },
            }
            for track in tracks
        ]
        score = min((region["score"] for region in regions), default=1.0)
        tasks.append(
            {
                "data": {VIDEO_NAME: url, "gem_sam_video": name},
                "predictions": [{"model_version": "gem_sam video", "score": score, "result": regions}],
            }
        )
    return tasks


def export_label_studio_video(
    tracks_data: dict[str, Any],
    out_dir: Path,
    *,
    final_dir: Path,
    document_root: Path | None = None,
    url_prefix: str | None = None,
    fps: float = DEFAULT_FPS,
) -> ExportStats:
    """Write ``label_config.xml``, ``tasks.json`` (and encoded frame folders) into ``out_dir``."""
    tasks = label_studio_video_tasks(
        tracks_data, out_dir=out_dir, final_dir=final_dir, document_root=document_root, url_prefix=url_prefix, fps=fps
    )
    rates = {video.get("fps") or fps for video in tracks_data["videos"]}
    classes = [category["name"] for category in tracks_data["categories"]]
    (out_dir / "label_config.xml").write_text(video_label_config(classes, fps=min(rates)), encoding="utf-8")
    (out_dir / "tasks.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    stats = ExportStats(videos=len(tasks))
    stats.images = sum(video["length"] for video in tracks_data["videos"])
    stats.instances = sum(len(task["predictions"][0]["result"]) for task in tasks)
    return stats
