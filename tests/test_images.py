"""Finding and reading images as a careless user leaves them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gem_sam.images import ImageReadError, find_images, load_image

from .conftest import SKIMAGE_DATA, small_photo


def test_find_images_recursive_sorted_with_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ["z.PNG", "a.jpg", "b/deep/c.webp", "b/d.tiff", "notes.txt", "b/e.jpeg.bak"]:
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "b", tmp_path / "b" / "deep" / "loop")
    found = [path.as_posix() for path in find_images(tmp_path)]
    assert found == ["a.jpg", "b/d.tiff", "b/deep/c.webp", "z.PNG"]


def test_find_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "missing")
    file = tmp_path / "file.png"
    file.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        find_images(file)
    (tmp_path / "empty").mkdir()
    assert find_images(tmp_path / "empty") == []


@pytest.mark.parametrize(
    "name,mode",
    [("astronaut.png", "RGB"), ("camera.png", "L"), ("logo.png", "RGBA"), ("rocket.jpg", "RGB")],
)
def test_load_real_photos_as_rgb(name: str, mode: str) -> None:
    with Image.open(SKIMAGE_DATA / name) as image:
        assert image.mode == mode
        size_wh = image.size
    array = load_image(SKIMAGE_DATA / name)
    assert array.dtype == np.uint8 and array.shape == (size_wh[1], size_wh[0], 3)


def test_grey_becomes_three_equal_channels() -> None:
    array = load_image(SKIMAGE_DATA / "camera.png")
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    photo = small_photo("chelsea.png", long_side=120).convert("RGB")  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo.save(tmp_path / "rotated.jpg", exif=exif)
    array = load_image(tmp_path / "rotated.jpg")
    assert array.shape[0] > array.shape[1]  # displayed as portrait


def test_16_bit_png_is_scaled_to_8_bit(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    array = load_image(tmp_path / "deep.png")
    assert array.shape == (64, 64, 3)
    assert array[0, 0, 0] == 0 and array[-1, -1, 0] == round(ramp.max() / 65535 * 255)


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty"), (b"this is text, not a picture", "not a readable image")],
)
def test_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        load_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    small_photo("astronaut.png").convert("RGB").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match="cannot decode"):
        load_image(tmp_path / "cut.jpg")
