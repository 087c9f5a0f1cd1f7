"""Exports of a ``tracks.json``, each read back by its own client: MOTChallenge boxes by motmetrics,
YOLO-seg frames by Ultralytics' ``YOLODataset``, and the FiftyOne video dataset by FiftyOne (with ffmpeg).
The Label Studio video tasks are imported into a real server in ``tests/review/test_label_studio.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gem_sam.mask_ops import decode_rle

from ..export.test_layout import export, read_with_ultralytics, ultralytics_masks
from .conftest import pan_frames, run_label_video, write_frame_folder, write_mp4


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory, varied_clip_checkpoint: Path, sam2_t_checkpoint: Path) -> Path:
    """A run over a frame folder and an MP4 (every second frame), with tracks to export."""
    folder = tmp_path_factory.mktemp("video_run")
    videos = folder / "videos"
    write_frame_folder(videos / "pan", pan_frames(frames=8))
    write_mp4(videos / "clip.mp4", pan_frames(photo="coffee.png", frames=12))
    vocab = folder / "vocab.txt"
    vocab.write_text("person\nrocket\ncat\n")
    out = folder / "tracks.json"
    code, _, stderr = run_label_video([
        "--videos", str(videos), "--out", str(out), "--vocab", str(vocab), "--clip-model", "gem-test-vit-tiny16",
        "--pretrained", str(varied_clip_checkpoint), "--sam-model", "sam2.1_hiera_t",
        "--sam-checkpoint", str(sam2_t_checkpoint), "--sam-image-size", "256", "--device", "cpu",
        "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
        "--box-nms-thresh", "1.0", "--keyframe-every", "4", "--frame-stride", "1", "--quiet",
    ])  # fmt: skip
    assert code == 0, stderr
    data = json.loads(out.read_text())
    assert len(data["videos"]) == 2 and {t["video_id"] for t in data["annotations"]} == {1, 2}
    return out


def test_mot_boxes_read_by_motmetrics(tracks: Path, tmp_path: Path) -> None:
    motmetrics = pytest.importorskip("motmetrics")
    data = json.loads(tracks.read_text())
    out = tmp_path / "mot"
    code, stdout, stderr = export(str(tracks), "--to", "mot", "--out", str(out))
    assert code == 0, stderr
    assert "videos: 2 (20 frames)" in stdout
    for video in data["videos"]:
        name = video["file_names"][0].split("/")[0]
        table = motmetrics.io.loadtxt(str(out / name / "gt" / "gt.txt"), fmt="mot15-2D")
        expected = {
            (frame + 1, track["track_id"]): box
            for track in data["annotations"] if track["video_id"] == video["id"]
            for frame, box in enumerate(track["bboxes"]) if box is not None
        }  # fmt: skip
        assert len(table) == len(expected) > 0
        for (frame, track_id), row in table.iterrows():
            assert [row["X"], row["Y"], row["Width"], row["Height"]] == pytest.approx(expected[(frame, track_id)])
        assert f"seqLength={video['length']}" in (out / name / "seqinfo.ini").read_text()


def test_yolo_seg_frames_read_by_ultralytics(tracks: Path, tmp_path: Path) -> None:
    data = json.loads(tracks.read_text())
    out = tmp_path / "yolo"
    code, _, stderr = export(str(tracks), "--to", "yolo-seg", "--out", str(out))
    assert code == 0, stderr
    read = read_with_ultralytics(out / "data.yaml", tmp_path)
    labels = {
        str(Path(label["im_file"]).relative_to((out / "images").resolve())): label for label in read["splits"]["train"]
    }
    assert len(labels) == sum(video["length"] for video in data["videos"]) == 20
    for video in data["videos"]:
        tracks_here = [t for t in data["annotations"] if t["video_id"] == video["id"]]
        for frame, file_name in enumerate(video["file_names"]):
            label = labels[file_name]
            seen = [t for t in tracks_here if t["segmentations"][frame] is not None]
            assert sorted(label["cls"]) == sorted(t["category_id"] - 1 for t in seen)
            for (_, mask), track in zip(
                sorted(ultralytics_masks(label), key=lambda item: -int(item[1].sum())),
                sorted(seen, key=lambda t: -t["areas"][frame]),
                strict=True,
            ):
                ours = decode_rle(track["segmentations"][frame])
                assert (mask & ours).sum() / (mask | ours).sum() > 0.5  # the polygon of that track's mask
    assert (out / "images" / "clip" / "00000.jpg").is_file()  # an MP4's frames are decoded
    assert (out / "images" / "pan" / "00000.jpg").is_symlink()  # a frame folder's are linked


FIFTYONE_VIDEO_READER = """
import json, sys
import fiftyone as fo
from gem_sam.cli.export import main

code = main([sys.argv[1], "--to", "fiftyone", "--dataset-name", "gem_sam_video_test", "--out", sys.argv[2]])
dataset = fo.load_dataset("gem_sam_video_test")
videos = []
for sample in dataset.iter_samples():
    frames = {}
    for number, frame in sample.frames.items():
        detections = frame["gem_sam"].detections if frame["gem_sam"] else []
        frames[number] = [{"label": d.label, "index": d.index, "confidence": d.confidence, "box": list(d.bounding_box),
                           "mask_pixels": int(d.mask.sum())} for d in detections]
    videos.append({"filepath": sample.filepath, "media_type": sample.media_type, "frames": frames,
                   "size": [sample.metadata.frame_width, sample.metadata.frame_height]})
print(json.dumps({"code": code, "videos": videos}))
"""


def test_fiftyone_video_dataset_read_back_through_fiftyone(tracks: Path, tmp_path: Path) -> None:
    pytest.importorskip("fiftyone", reason="the dev extra installs fiftyone")
    if shutil.which("ffprobe") is None:
        pytest.skip("FiftyOne's videos need ffmpeg/ffprobe: apt install ffmpeg (scripts/setup_env.sh installs it)")
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone_db"),
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DO_NOT_TRACK": "true"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", FIFTYONE_VIDEO_READER, str(tracks), str(tmp_path / "fo")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.strip().splitlines()[-1])
    assert read["code"] == 0 and len(read["videos"]) == 2
    data = json.loads(tracks.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    for video, sample in zip(data["videos"], read["videos"], strict=True):
        assert sample["media_type"] == "video"
        assert sample["size"] == [video["width"] + video["width"] % 2, video["height"] + video["height"] % 2]
        numbers = (
            [index + 1 for index in video["source_frames"]]
            if Path(video["source"]).is_file()
            else list(range(1, video["length"] + 1))
        )
        for track in (t for t in data["annotations"] if t["video_id"] == video["id"]):
            for position, rle in enumerate(track["segmentations"]):
                if rle is None:
                    continue
                found = [d for d in sample["frames"][str(numbers[position])] if d["index"] == track["track_id"]]
                assert len(found) == 1 and found[0]["label"] == names[track["category_id"]]
                assert found[0]["mask_pixels"] == int(np.count_nonzero(decode_rle(rle)))
    assert (tmp_path / "fo" / "videos" / "pan.mp4").is_file()  # the frame folder, encoded
