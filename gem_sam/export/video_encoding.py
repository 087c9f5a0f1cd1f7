"""Videos for tools that want a video file (FiftyOne, Label Studio): a frame folder's labelled frames
encoded as H.264 MP4 with ffmpeg, which these tools also need (Debian and Ubuntu: ``apt install ffmpeg``).

An odd width or height is padded by one pixel at the right or bottom (H.264's 4:2:0 needs even sides);
the frames' pixels keep their coordinates.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..video.frames import open_video

DEFAULT_FPS = 30.0  # frame rate given to a frame folder's video


def require_ffmpeg(what: str) -> None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(
            f"{what} needs {' and '.join(missing)} on the PATH (Debian and Ubuntu: apt install ffmpeg)"
        )


def encode_frames(video: dict[str, Any], path: Path, *, fps: float = DEFAULT_FPS) -> tuple[int, int]:
    """Encode the labelled frames of a ``tracks.json`` video (in order) into ``path``; returns the encoded
    (width, height)."""
    require_ffmpeg("encoding a frame folder as a video")
    width, height = video["width"] + video["width"] % 2, video["height"] + video["height"] % 2
    command = [
        "ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{video['width']}x{video['height']}", "-r", f"{fps:g}", "-i", "-",
        "-vf", f"pad={width}:{height}:0:0", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
        "-crf", "18", str(path),
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = open_video(video["source"], frame_stride=video["frame_stride"])
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for position in range(video["length"]):
            (frame,) = frames.read(position, position + 1)
            process.stdin.write(frame.tobytes())
        process.stdin.close()
        error = process.stderr.read().decode(errors="replace")
        if process.wait() != 0:
            raise ValueError(f"ffmpeg could not encode {video['source']!r}: {error.strip()[-300:]}")
    finally:
        frames.close()
        if process.poll() is None:
            process.kill()
    return width, height
