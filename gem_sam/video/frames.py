"""Videos as sequences of RGB frames, decoded on demand and never held whole.

A video is a video file (mp4, mov, avi, mkv, webm; decoded with OpenCV's FFmpeg) or a folder of frame
images sorted numerically (``00000.jpg``, ``00001.jpg``, ..., or ``frame_9.png`` before
``frame_10.png``). ``frame_stride`` K keeps every K-th frame; the kept frames are numbered 0, 1, ...
(``VideoFrames.source_index`` gives each one's index in the source).

Frames are read in order, a window at a time (``read``): a video file is decoded sequentially from where
the last read stopped (reopened only to go back, as a resumed run does), so memory holds the window, not
the video. Every frame has the size of the first; a frame of another size is refused, naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..images import IMAGE_EXTENSIONS, ImageReadError, load_image

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm")


class VideoReadError(ValueError):
    """A video that cannot be read as frames; the message names it and says why."""


def natural_key(name: str) -> list:
    """Sort key that orders the numbers inside names by value (``9`` before ``10``)."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", name)]


def is_video(path: Path) -> bool:
    """A video file, or a folder holding frame images."""
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTENSIONS
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir() if p.is_file())


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """The videos directly in ``folder`` (files and frame folders), sorted naturally by name."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"--videos {str(folder)!r} is not a folder")
    return sorted((path for path in root.iterdir() if is_video(path)), key=lambda path: natural_key(path.name))


@dataclass
class VideoFrames:
    """The frames of one video: ``len(frames)`` kept frames of ``size_hw``; ``read(start, stop)`` gives
    frames ``start .. stop - 1`` as HxWx3 uint8 RGB arrays."""

    path: Path
    frame_stride: int = 1
    size_hw: tuple[int, int] = (0, 0)
    source_indices: list[int] = field(default_factory=list)  # kept frame -> frame index in the source
    frame_files: list[Path] = field(default_factory=list)  # a frame folder's files, one per source frame
    fps: float | None = None  # a video file's frame rate
    _capture: object | None = field(default=None, repr=False)
    _next_source: int = field(default=0, repr=False)  # the source frame the capture decodes next

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    def __len__(self) -> int:
        return len(self.source_indices)

    def file_names(self) -> list[str]:
        """The name of each kept frame in YouTube-VIS's ``file_names``: ``<video>/<frame file>`` for a
        frame folder, ``<video>/<source index>.jpg`` for a video file (the names exports write)."""
        if self.frame_files:
            return [f"{self.name}/{self.frame_files[index].name}" for index in self.source_indices]
        return [f"{self.name}/{index:05d}.jpg" for index in self.source_indices]

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        """Kept frames ``start`` .. ``stop - 1``."""
        if self.frame_files:
            return [self._frame_file(self.frame_files[self.source_indices[i]]) for i in range(start, stop)]
        return [self._decoded(self.source_indices[i]) for i in range(start, stop)]

    def _frame_file(self, path: Path) -> np.ndarray:
        try:
            frame = load_image(path)
        except ImageReadError as error:
            raise VideoReadError(f"frame {str(path)!r} cannot be read: {error}") from error
        if frame.shape[:2] != self.size_hw:
            raise VideoReadError(
                f"frame {str(path)!r} is {frame.shape[1]}x{frame.shape[0]}, but the video's frames are "
                f"{self.size_hw[1]}x{self.size_hw[0]}; every frame of a video must have one size"
            )
        return frame

    def _decoded(self, source_index: int) -> np.ndarray:
        import cv2

        if self._capture is None or source_index < self._next_source:
            self.close()
            self._capture = cv2.VideoCapture(str(self.path))
            self._next_source = 0
        capture = self._capture
        while self._next_source < source_index:  # skip without decoding
            if not capture.grab():
                raise VideoReadError(f"video {str(self.path)!r} ends before frame {source_index}")
            self._next_source += 1
        ok, frame = capture.read()
        if not ok:
            raise VideoReadError(f"video {str(self.path)!r}: frame {source_index} cannot be decoded")
        self._next_source += 1
        if frame.shape[:2] != self.size_hw:
            raise VideoReadError(f"video {str(self.path)!r}: frame {source_index} has another size than the first")
        return np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def open_video(path: str | os.PathLike, *, frame_stride: int = 1) -> VideoFrames:
    """Open a video file or a folder of frames; raises ``VideoReadError`` (or ``FileNotFoundError``) with
    one line that names the video and what is wrong."""
    path = Path(path)
    if frame_stride < 1:
        raise ValueError(f"--frame-stride {frame_stride} must be at least 1")
    if not path.exists():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    if path.is_dir():
        return _open_folder(path, frame_stride)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoReadError(
            f"{str(path)!r} is not a video: give a file ending in {', '.join(VIDEO_EXTENSIONS)} or a folder of frames"
        )
    return _open_file(path, frame_stride)


def _open_folder(path: Path, frame_stride: int) -> VideoFrames:
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise VideoReadError(f"the frame folder {str(path)!r} holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
    sizes = []
    for file in files:  # headers only: a frame of another size is refused before any work
        try:
            with Image.open(file) as image:
                sizes.append(_upright_size(image))
        except (UnidentifiedImageError, OSError) as error:
            raise VideoReadError(f"frame {str(file)!r} cannot be read ({error})") from error
    width, height = sizes[0]
    for file, size in zip(files, sizes, strict=True):
        if size != (width, height):
            raise VideoReadError(
                f"frame {str(file)!r} is {size[0]}x{size[1]}, but {files[0].name} is {width}x{height}; every frame "
                "of a video must have one size"
            )
    kept = list(range(0, len(files), frame_stride))
    return VideoFrames(path, frame_stride, (height, width), kept, files)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an image as shown (EXIF orientations 5-8 swap the sides)."""
    orientation = image.getexif().get(0x0112, 1)
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else (image.width, image.height)


def _open_file(path: Path, frame_stride: int) -> VideoFrames:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoReadError(f"video {str(path)!r} cannot be opened (corrupt, or a codec FFmpeg does not know)")
        ok, first = capture.read()
        if not ok:
            raise VideoReadError(f"video {str(path)!r} has no frame that can be decoded")
        count = 1
        while capture.grab():  # count without decoding
            count += 1
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
    finally:
        capture.release()
    kept = list(range(0, count, frame_stride))
    return VideoFrames(path, frame_stride, tuple(first.shape[:2]), kept, fps=fps)


def frames_of(source: VideoFrames, indices: Sequence[int]) -> list[np.ndarray]:
    """Kept frames at ``indices`` (ascending), read in one sequential pass."""
    return [source.read(index, index + 1)[0] for index in indices]
