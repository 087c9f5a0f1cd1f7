"""MOTChallenge boxes of a ``tracks.json``, as tracking evaluations (motmetrics, TrackEval) read them.

    OUT/<video>/gt/gt.txt     frame,id,bb_left,bb_top,bb_width,bb_height,conf,x,y,z per box
    OUT/<video>/seqinfo.ini   the sequence's name, length, frame rate and size

Conventions: frames are 1-based positions in the video's labelled frames (``file_names``), ids are the
tracks' ids (1-based, unique in their video), and boxes are the pixel extent of each mask in 1-based
pixel coordinates (MOTChallenge's: the top-left pixel is (1, 1)), so bb_left = COCO x + 1. ``conf`` is
1 (every box counts, as in a ground-truth file) and x, y, z are -1 (2D). Rows are sorted by frame, then
id. ``OUT/<video>/tracks.csv`` gives each id's class and score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .stats import ExportStats


def mot_rows(video: dict[str, Any], tracks: list[dict[str, Any]]) -> list[str]:
    """The gt.txt lines of one video's tracks."""
    rows = []
    for track in tracks:
        for frame, box in enumerate(track["bboxes"]):
            if box is None:
                continue
            x, y, width, height = box
            rows.append((frame + 1, track["track_id"], f"{x + 1:g},{y + 1:g},{width:g},{height:g}"))
    return [f"{frame},{track_id},{box},1,-1,-1,-1" for frame, track_id, box in sorted(rows)]


def seqinfo(video: dict[str, Any], name: str) -> str:
    fps = video.get("fps") or 30
    return (
        "[Sequence]\n"
        f"name={name}\nimDir=img1\nframeRate={fps:g}\nseqLength={video['length']}\n"
        f"imWidth={video['width']}\nimHeight={video['height']}\nimExt=.jpg\n"
    )


def video_folder_name(video: dict[str, Any]) -> str:
    """A video's name: the folder of its frames in ``file_names`` (``<video>/<frame>``)."""
    return video["file_names"][0].split("/")[0] if video["file_names"] else f"video{video['id']}"


def export_mot(tracks_data: dict[str, Any], out_dir: Path) -> ExportStats:
    """Write every video's gt.txt, seqinfo.ini and tracks.csv under ``out_dir``."""
    names = {category["id"]: category["name"] for category in tracks_data["categories"]}
    stats = ExportStats()
    for video in tracks_data["videos"]:
        name = video_folder_name(video)
        tracks = [track for track in tracks_data["annotations"] if track["video_id"] == video["id"]]
        folder = out_dir / name
        (folder / "gt").mkdir(parents=True, exist_ok=True)
        rows = mot_rows(video, tracks)
        (folder / "gt" / "gt.txt").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        (folder / "seqinfo.ini").write_text(seqinfo(video, name), encoding="utf-8")
        lines = ["id,class,score"] + [f"{t['track_id']},{names[t['category_id']]},{t['score']:.6f}" for t in tracks]
        (folder / "tracks.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        stats.images += video["length"]
        stats.videos += 1
        stats.instances += len(rows)
    return stats
