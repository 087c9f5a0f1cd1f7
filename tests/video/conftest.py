"""Fixtures of the video tests: short clips of a real photo seen through a moving crop (a pan), as frame
folders and as MP4 files, and the command-line options of the tiny test models."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from gem_sam.cli.label_video import main as label_video_main

from ..conftest import TINY_CLIP_NAME, small_photo


def pan_frames(*, photo: str = "astronaut.png", frames: int = 12, step: int = 4) -> list[np.ndarray]:
    """160x120 RGB frames of a window moving right over a real photo."""
    image = small_photo(photo, long_side=240).convert("RGB")
    return [np.asarray(image.crop((i * step, 20, i * step + 160, 140))) for i in range(frames)]


def write_frame_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


def write_mp4(path: Path, frames: list[np.ndarray], *, fps: float = 10.0) -> Path:
    """An MP4 (MPEG-4 part 2) written with OpenCV's FFmpeg."""
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    assert path.is_file() and path.stat().st_size > 0, f"OpenCV wrote no {path}"
    return path


@pytest.fixture
def clip_folder(tmp_path: Path) -> Path:
    return write_frame_folder(tmp_path / "pan", pan_frames())


@pytest.fixture
def video_args(varied_clip_checkpoint: Path, sam2_t_checkpoint: Path, tmp_path: Path) -> list[str]:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("person\nrocket\ncat\n")
    return [
        "--vocab", str(vocab), "--clip-model", TINY_CLIP_NAME, "--pretrained", str(varied_clip_checkpoint),
        "--sam-model", "sam2.1_hiera_t", "--sam-checkpoint", str(sam2_t_checkpoint), "--sam-image-size", "256",
        "--device", "cpu", "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
        "--box-nms-thresh", "1.0", "--keyframe-every", "5", "--quiet",
    ]  # fmt: skip


def run_label_video(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = label_video_main(argv)
    return code, out.getvalue(), err.getvalue()
