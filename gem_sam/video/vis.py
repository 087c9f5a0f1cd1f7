"""``tracks.json``: labelled videos in the YouTube-VIS format, which VIS trainers and SAM 3's evaluation read.

- ``videos``: ``id``, ``file_names`` (one per labelled frame, ``<video>/<frame file>``), ``length``,
  ``width``, ``height``, and gem_sam's ``source`` (the video file or frame folder), ``frame_stride`` and
  ``source_frames`` (each labelled frame's index in the source) and ``fps`` (video files);
- ``categories``: ids 1..C in vocabulary order;
- ``annotations``: one per track: ``id``, ``video_id``, ``category_id``, ``segmentations`` (per labelled
  frame a COCO RLE, or null where the track is not seen), ``areas`` and ``bboxes`` (COCO XYWH, the
  pixel extent of the mask; null likewise), ``iscrowd`` 0, ``score``, ``similarity``, ``margin``,
  ``entropy``, ``track_id`` (the tracker's id, unique in its video), ``first_frame`` and ``last_frame``
  (0-based positions in ``file_names`` of its first and last non-null mask, inclusive);
- ``info``: ``description`` ``"gem_sam video"`` and the run's settings.

Frames are 0-based positions in ``file_names`` (and in ``segmentations``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..mask_ops import rle_area, rle_bbox_xywh

VIS_DESCRIPTION = "gem_sam video"


def track_annotation(
    *, annotation_id: int, video_id: int, category_id: int, track_id: int, rles: list[dict | None], naming: dict
) -> dict[str, Any]:
    """One track as a YouTube-VIS annotation (``naming``: score, similarity, margin, entropy)."""
    seen = [index for index, rle in enumerate(rles) if rle is not None]
    return {
        "id": annotation_id,
        "video_id": video_id,
        "category_id": category_id,
        "segmentations": rles,
        "areas": [rle_area(rle) if rle is not None else None for rle in rles],
        "bboxes": [rle_bbox_xywh(rle) if rle is not None else None for rle in rles],
        "iscrowd": 0,
        **{key: float(value) for key, value in naming.items()},
        "track_id": track_id,
        "first_frame": seen[0],
        "last_frame": seen[-1],
    }


def write_tracks(
    path: str | os.PathLike,
    *,
    videos: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    settings: dict[str, Any],
) -> None:
    write_json_atomic(
        {
            "info": {"description": VIS_DESCRIPTION, "settings": settings},
            "videos": videos,
            "categories": categories,
            "annotations": annotations,
        },
        path,
    )


def read_tracks(path: str | os.PathLike) -> dict[str, Any]:
    """A ``tracks.json`` that ``gem-sam label-video`` wrote; raises naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tracks file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not a YouTube-VIS file: it is not JSON ({error})") from error
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("videos", "annotations")):
        raise ValueError(f"{str(path)!r} is not a YouTube-VIS file: it has no 'videos' and 'annotations' lists")
    if (data.get("info") or {}).get("description") != VIS_DESCRIPTION:
        raise ValueError(f"{str(path)!r} is a YouTube-VIS file but not one written by gem-sam label-video")
    return data


def is_tracks_file(path: str | os.PathLike) -> bool:
    """Whether a file is a ``tracks.json`` that ``gem-sam label-video`` wrote (its first bytes say so)."""
    start = json.dumps({"info": {"description": VIS_DESCRIPTION}})[:-2].encode()  # '{"info": {"description": ...'
    try:
        with open(path, "rb") as handle:
            return handle.read(len(start)) == start
    except OSError:
        return False
