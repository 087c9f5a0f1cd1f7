"""A ``tracks.json`` as an Ultralytics YOLO-seg dataset: every labelled frame an image with its labels.

    OUT/images/<video>/<frame>.jpg     the labelled frames: links to (or copies of) a frame folder's files,
                                       or frames decoded from a video file (JPEG)
    OUT/labels/<video>/<frame>.txt     one line per track seen on the frame: class x1 y1 x2 y2 ...
    OUT/data.yaml                      path, train, val, names

Frame names are those of ``file_names``. With ``--val-fraction`` whole videos go to ``train/`` or
``val/`` (a video's frames in both splits would let a model validate on what it trained on), drawn by a
seeded hash of the video's name (``layout.split_names``). Polygons follow the image export's rules
(``yolo``): one outline per track and frame, pieces joined, holes filled.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from ..mask_ops import decode_rle
from ..video.frames import open_video
from .layout import split_names
from .mot import video_folder_name
from .polygons import DEFAULT_MIN_POLYGON_AREA, join_pieces, mask_to_polygons
from .stats import ExportStats
from .yolo import data_yaml, label_path, outline_pixels, yolo_line

JPEG_QUALITY = 95


def export_video_yolo_seg(
    tracks_data: dict[str, Any],
    out_dir: Path,
    *,
    min_polygon_area: float = DEFAULT_MIN_POLYGON_AREA,
    copy_images: bool = False,
    val_fraction: float | None = None,
    seed: int = 0,
    final_dir: Path | None = None,
) -> ExportStats:
    """Write the frames and labels of every video of ``tracks_data`` into ``out_dir`` (``final_dir``: see
    ``yolo.export_yolo_seg``)."""
    names = [category["name"] for category in tracks_data["categories"]]
    videos = {video_folder_name(video): video for video in tracks_data["videos"]}
    splits = split_names(list(videos), val_fraction=val_fraction, seed=seed)
    stats = ExportStats()
    for name, video in videos.items():
        split = splits[name]
        tracks = [track for track in tracks_data["annotations"] if track["video_id"] == video["id"]]
        images = out_dir / "images" / (split or "") / name
        images.mkdir(parents=True, exist_ok=True)
        _write_frames(video, images, copy=copy_images)
        size_hw = (video["height"], video["width"])
        for frame, file_name in enumerate(video["file_names"]):
            lines = []
            for track in tracks:
                rle = track["segmentations"][frame]
                if rle is None:
                    continue
                mask = decode_rle(rle)
                pieces = mask_to_polygons(mask, min_area=min_polygon_area)
                if not pieces:
                    stats.dropped_small += 1
                    continue
                outline = join_pieces(pieces)
                lines.append(yolo_line(track["category_id"] - 1, outline, size_hw))
                stats.record_area(polygon_pixels=outline_pixels(outline, size_hw), mask_pixels=int(mask.sum()))
            relative = f"{split}/{file_name}" if split else file_name
            labels = out_dir / label_path(f"images/{relative}")
            labels.parent.mkdir(parents=True, exist_ok=True)
            labels.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            stats.images += 1
            stats.instances += len(lines)
        stats.videos += 1
        if split:
            stats.split_counts[split] = stats.split_counts.get(split, 0) + video["length"]
    split = val_fraction is not None
    (out_dir / "data.yaml").write_text(data_yaml(final_dir or out_dir, names, split=split), encoding="utf-8")
    return stats


def _write_frames(video: dict[str, Any], folder: Path, *, copy: bool) -> None:
    """Each labelled frame under ``folder`` by its ``file_names`` name: a frame folder's files linked (or
    copied), a video file's frames decoded and written as JPEG."""
    frames = open_video(video["source"], frame_stride=video["frame_stride"])
    try:
        if frames.frame_files:
            for index in frames.source_indices:
                source = frames.frame_files[index]
                if copy:
                    shutil.copy2(source, folder / source.name)
                else:
                    os.symlink(source.resolve(), folder / source.name)
            return
        for position, file_name in enumerate(video["file_names"]):
            (frame,) = frames.read(position, position + 1)
            Image.fromarray(frame).save(folder / Path(file_name).name, quality=JPEG_QUALITY)
    finally:
        frames.close()
