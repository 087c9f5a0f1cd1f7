"""Finding and reading images: recursive discovery, EXIF orientation, any mode to 8-bit RGB."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 200_000_000  # larger images are refused (decompression-bomb guard)


class ImageReadError(Exception):
    """An image file that cannot be turned into an RGB array; the message says why."""


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, symlinks followed once, loops skipped), sorted by path.

    Returned paths are relative to ``root``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"--images must be a folder, but {str(root)!r} is a file")
    found: list[Path] = []
    visited: set[str] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:  # a symlink loop or a second link to the same folder
            subdirs.clear()
            continue
        visited.add(real)
        subdirs.sort()
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(directory, name).relative_to(root))
    return sorted(found, key=lambda path: path.as_posix())


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8 RGB (16-bit scaled down, alpha dropped, palettes expanded)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = max(float(array.max() - array.min()), 1e-12)
        grey = ((array - array.min()) / span * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path: str | os.PathLike | io.BytesIO) -> np.ndarray:
    """Read an image (a file, or its bytes in a ``BytesIO``) as HxWx3 uint8 RGB, EXIF orientation applied.

    Raises ``ImageReadError`` for a missing, empty, truncated, too large or non-image file.
    """
    source = path if isinstance(path, io.BytesIO) else Path(path)
    try:
        size = source.getbuffer().nbytes if isinstance(source, io.BytesIO) else source.stat().st_size
        if size == 0:
            raise ImageReadError("the file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
            with Image.open(source) as image:
                image = ImageOps.exif_transpose(image)
                array = _to_uint8_rgb(image)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"the image is too large ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"cannot decode the image ({error})") from error
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageReadError(f"the image has no pixels ({array.shape[1]}x{array.shape[0]})")
    return array
