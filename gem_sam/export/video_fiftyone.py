"""A ``tracks.json`` as a FiftyOne video dataset: a sample per video, and on each labelled frame a
``gem_sam`` field of detections whose ``index`` is the track id, so FiftyOne follows each track.

FiftyOne reads videos with ffmpeg and ffprobe (Debian and Ubuntu: ``apt install ffmpeg``). A video file
is used where it is, its labelled frames at their frame numbers in it (1-based, FiftyOne's); a frame
folder's labelled frames are encoded as ``<out>/videos/<video>.mp4`` (``video_encoding``) and numbered
1, 2, ... Boxes are FiftyOne's relative [x, y, w, h] of the mask's pixel extent, masks cropped to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..mask_ops import decode_rle
from .mot import video_folder_name
from .stats import ExportStats
from .video_encoding import DEFAULT_FPS, encode_frames, require_ffmpeg


def video_samples(
    tracks_data: dict[str, Any], *, out_dir: Path | None, final_dir: Path | None = None, fps: float = DEFAULT_FPS
) -> list[dict[str, Any]]:
    """Per video: ``filepath`` (absolute) and ``frames`` {frame number: [detection, ...]}, each detection with
    ``label``, ``confidence``, ``index`` (the track id), ``bounding_box`` (relative XYWH), ``mask`` and the
    track's ``margin`` and ``entropy``. Frame folders are encoded into ``out_dir`` (a staging folder that
    becomes ``final_dir``, where the samples point)."""
    names = {category["id"]: category["name"] for category in tracks_data["categories"]}
    samples = []
    for video in tracks_data["videos"]:
        source = Path(video["source"])
        if source.is_file():
            filepath, numbers = source, [index + 1 for index in video["source_frames"]]
            width, height = video["width"], video["height"]
        else:
            if out_dir is None:
                raise ValueError(
                    f"{video_folder_name(video)!r} is a folder of frames: FiftyOne needs a video file, so give "
                    "--out DIR, where it is encoded (needs ffmpeg)"
                )
            relative = Path("videos") / f"{video_folder_name(video)}.mp4"
            width, height = encode_frames(video, out_dir / relative, fps=fps)
            filepath = (final_dir or out_dir) / relative
            numbers = list(range(1, video["length"] + 1))
        frames: dict[int, list[dict[str, Any]]] = {number: [] for number in numbers}
        for track in (t for t in tracks_data["annotations"] if t["video_id"] == video["id"]):
            for position, rle in enumerate(track["segmentations"]):
                if rle is None:
                    continue
                x, y, w, h = (int(round(v)) for v in track["bboxes"][position])
                frames[numbers[position]].append(
                    {
                        "label": names[track["category_id"]],
                        "confidence": float(track["score"]),
                        "index": int(track["track_id"]),
                        "bounding_box": [x / width, y / height, w / width, h / height],
                        "mask": decode_rle(rle)[y : y + h, x : x + w],
                        "margin": track.get("margin"),
                        "entropy": track.get("entropy"),
                    }
                )
        samples.append({"filepath": str(filepath.resolve()), "frames": frames})
    return samples


def load_fiftyone_video_dataset(
    tracks_data: dict[str, Any],
    *,
    name: str,
    overwrite: bool,
    out_dir: Path | None,
    final_dir: Path | None = None,
    fps: float = DEFAULT_FPS,
) -> tuple[Any, ExportStats]:
    """Create (or with ``overwrite`` replace) the FiftyOne video dataset ``name`` (``video_samples``)."""
    try:
        import fiftyone as fo
    except ImportError as error:
        raise ImportError("the fiftyone export needs FiftyOne: pip install 'gem_sam[fiftyone]'") from error
    require_ffmpeg("a FiftyOne video dataset")
    if fo.dataset_exists(name) and not overwrite:
        raise ValueError(f"a FiftyOne dataset named {name!r} exists; choose another --dataset-name or --overwrite")
    samples = video_samples(tracks_data, out_dir=out_dir, final_dir=final_dir, fps=fps)
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    stats = ExportStats()
    for entry in samples:
        sample = fo.Sample(filepath=entry["filepath"])
        for number, detections in entry["frames"].items():
            sample.frames[number]["gem_sam"] = fo.Detections(
                detections=[fo.Detection(**{k: v for k, v in d.items() if v is not None}) for d in detections]
            )
            stats.images += 1
            stats.instances += len(detections)
        dataset.add_sample(sample)
        stats.videos += 1
    return dataset, stats
