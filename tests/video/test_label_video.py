"""``gem-sam label-video`` end to end: YouTube-VIS output, inputs (frame folders, MP4, strides, folders of
videos), clear errors, resuming after SIGKILL, and Ray."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gem_sam.mask_ops import decode_rle, mask_bbox_xywh

from .conftest import pan_frames, run_label_video, write_frame_folder, write_mp4

REPO = Path(__file__).resolve().parents[2]


def check_youtube_vis(data: dict, *, lengths: list[int]) -> None:
    """The file's structure, with every mask, area and box consistent and every track's frames right."""
    assert data["info"]["description"] == "gem_sam video"
    assert [video["length"] for video in data["videos"]] == lengths
    assert [c["name"] for c in data["categories"]] == ["person", "rocket", "cat"]
    for video in data["videos"]:
        assert len(video["file_names"]) == video["length"] == len(video["source_frames"])
    for track in data["annotations"]:
        video = data["videos"][track["video_id"] - 1]
        assert len(track["segmentations"]) == len(track["areas"]) == len(track["bboxes"]) == video["length"]
        seen = [i for i, rle in enumerate(track["segmentations"]) if rle is not None]
        assert seen and (track["first_frame"], track["last_frame"]) == (seen[0], seen[-1])
        for rle, area, box in zip(track["segmentations"], track["areas"], track["bboxes"], strict=True):
            if rle is None:
                assert area is None and box is None
                continue
            mask = decode_rle(rle)
            assert mask.shape == (video["height"], video["width"])
            assert area == int(mask.sum()) > 0 and box == mask_bbox_xywh(mask)
        assert 0.0 < track["score"] <= 1.0 and 0.0 <= track["margin"] <= 1.0 and track["iscrowd"] == 0
    # masks of two tracks never overlap
    for video in data["videos"]:
        tracks = [t for t in data["annotations"] if t["video_id"] == video["id"]]
        for frame in range(video["length"]):
            masks = [decode_rle(t["segmentations"][frame]) for t in tracks if t["segmentations"][frame] is not None]
            if masks:
                assert int(np.sum(masks, axis=0).max()) == 1


def test_a_frame_folder_becomes_youtube_vis(clip_folder: Path, tmp_path: Path, video_args: list[str]) -> None:
    out = tmp_path / "tracks.json"
    code, stdout, stderr = run_label_video(["--video", str(clip_folder), "--out", str(out), *video_args])
    assert code == 0, stderr
    assert "videos labelled: 1 (12 frames)" in stdout and "tracks started:" in stdout and "frames per second" in stdout
    data = json.loads(out.read_text())
    check_youtube_vis(data, lengths=[12])
    video = data["videos"][0]
    assert video["file_names"][:2] == ["pan/00000.jpg", "pan/00001.jpg"] and video["source_frames"] == list(range(12))
    assert data["annotations"], "no track: the run compared nothing"
    assert data["info"]["settings"]["video"]["keyframe_every"] == 5


def test_an_mp4_with_a_frame_stride(tmp_path: Path, video_args: list[str]) -> None:
    video = write_mp4(tmp_path / "clip.mp4", pan_frames(frames=12))
    out = tmp_path / "tracks.json"
    code, _, stderr = run_label_video(["--video", str(video), "--out", str(out), "--frame-stride", "2", *video_args])
    assert code == 0, stderr
    data = json.loads(out.read_text())
    check_youtube_vis(data, lengths=[6])
    assert data["videos"][0]["source_frames"] == [0, 2, 4, 6, 8, 10]
    assert data["videos"][0]["file_names"][1] == "clip/00002.jpg" and data["videos"][0]["fps"] == pytest.approx(10.0)


def test_a_folder_of_videos_skips_what_it_cannot_read(tmp_path: Path, video_args: list[str]) -> None:
    videos = tmp_path / "videos"
    write_frame_folder(videos / "a_pan", pan_frames(frames=6))
    write_mp4(videos / "b_clip.mp4", pan_frames(photo="coffee.png", frames=6))
    (videos / "c_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    out = tmp_path / "tracks.json"
    code, stdout, stderr = run_label_video(["--videos", str(videos), "--out", str(out), *video_args])
    assert code == 0, stderr
    assert "videos labelled: 2 (12 frames), skipped: 1" in stdout and "skipped c_broken.mp4: video" in stdout
    data = json.loads(out.read_text())
    check_youtube_vis(data, lengths=[6, 6])
    assert [Path(v["source"]).name for v in data["videos"]] == ["a_pan", "b_clip.mp4"]


@pytest.mark.parametrize(
    "case,message",
    [
        ("corrupt", "cannot be opened"),
        ("empty", "holds no frames"),
        ("size", "is 80x60, but 00000.jpg is 160x120"),
        ("sam1", "is a SAM 1 model; videos are tracked with SAM 2"),
        ("not-a-video", "is not a video"),
        ("dedupe", "--dedupe-iou and --drop-parts do not apply to videos"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, video_args: list[str], case: str, message: str) -> None:
    args = list(video_args)
    video = tmp_path / "clip"
    if case == "corrupt":
        video = tmp_path / "clip.mp4"
        video.write_bytes(b"garbage" * 100)
    elif case == "empty":
        video.mkdir()
        (video / "notes.txt").write_text("no frames here")
    elif case == "size":
        frames = pan_frames(frames=3)
        write_frame_folder(video, frames)
        Image.fromarray(frames[0][::2, ::2]).save(video / "00001.jpg")
    elif case == "not-a-video":
        video = tmp_path / "clip.gif"
        video.write_bytes(b"GIF89a")
    else:
        write_frame_folder(video, pan_frames(frames=3))
        if case == "sam1":
            args[args.index("sam2.1_hiera_t")] = "vit_b"
        else:
            args += ["--dedupe-iou", "0.9"]
    code, _, stderr = run_label_video(["--video", str(video), "--out", str(tmp_path / "t.json"), *args])
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "t.json").exists()


DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.conftest import register_tiny_models
register_tiny_models(Path({configs!r}))
from gem_sam.cli.label_video import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_and_writes_the_same_file(tmp_path: Path, video_args: list[str]) -> None:
    """SIGKILL after the first window is saved; the rerun continues from there (and says so), and its
    tracks.json equals an uninterrupted run's byte for byte."""
    folder = write_frame_folder(tmp_path / "long_pan", pan_frames(frames=16, step=3))
    driver = DRIVER.format(repo=str(REPO), configs=str(tmp_path / "configs"))
    uninterrupted = tmp_path / "whole.json"
    subprocess.run(
        [sys.executable, "-c", driver, "--video", str(folder), "--out", str(uninterrupted), *video_args],
        check=True, capture_output=True,
    )  # fmt: skip
    out = tmp_path / "killed.json"
    records = Path(f"{out}.records")
    process = subprocess.Popen(
        [sys.executable, "-c", driver, "--video", str(folder), "--out", str(out), *video_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(records.glob("img-*.json"))) < 1 and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists() and len(list(records.glob("img-*.json"))) in (1, 2)
    result = subprocess.run(
        [sys.executable, "-c", driver, "--video", str(folder), "--out", str(out), *video_args],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "window(s) from an earlier run" in result.stdout
    assert out.read_bytes() == uninterrupted.read_bytes()
    assert json.loads(out.read_text())["annotations"]


def test_ray_labels_one_video_per_task(tmp_path: Path, varied_clip_checkpoint: Path, sam2_t_checkpoint: Path) -> None:
    """Through the API, so that the workers register the tiny test models (``clip_config_paths``)."""
    pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install gem_sam[ray]")
    from gem_sam.labelling.spec import LabellerSpec
    from gem_sam.sam import Sam2GeneratorConfig
    from gem_sam.video import TrackingConfig, VideoConfig, VideoLabellerSpec, find_videos, label_videos
    from gem_sam.video.ray_engine import label_videos_ray

    from ..conftest import LOOSE_SETTINGS, TINY_CLIP_NAME

    videos = tmp_path / "videos"
    write_frame_folder(videos / "a_pan", pan_frames(frames=6))
    write_frame_folder(videos / "b_pan", pan_frames(photo="coffee.png", frames=6))
    spec = VideoLabellerSpec(
        labeller=LabellerSpec(
            vocabulary=("person", "rocket", "cat"), clip_model=TINY_CLIP_NAME, pretrained=str(varied_clip_checkpoint),
            sam_model="sam2.1_hiera_t", sam_checkpoint=str(sam2_t_checkpoint), device="cpu",
            generator=Sam2GeneratorConfig(points_per_side=4, **LOOSE_SETTINGS),
            clip_config_paths=(str(varied_clip_checkpoint.parent / "configs"),),
        ),
        video=VideoConfig(tracking=TrackingConfig(keyframe_every=5)),
        sam_image_size=256,
    )  # fmt: skip
    found = find_videos(videos)
    single, distributed = tmp_path / "single.json", tmp_path / "ray.json"
    run = {"videos": found, "inputs": videos, "settings": spec.settings(), "progress": False}
    label_videos(spec.build(), out_path=single, **run)
    summary = label_videos_ray(spec, videos=found, out_path=distributed, inputs=videos, workers=1, progress=False)
    assert len(summary.videos) == 2 and not summary.skipped
    ours, reference = json.loads(distributed.read_text()), json.loads(single.read_text())
    assert ours["videos"] == reference["videos"] and ours["annotations"]
    assert [(a["video_id"], a["track_id"], a["category_id"]) for a in ours["annotations"]] == [
        (a["video_id"], a["track_id"], a["category_id"]) for a in reference["annotations"]
    ]
    assert [a["segmentations"] for a in ours["annotations"]] == [a["segmentations"] for a in reference["annotations"]]
