"""Where an export puts each image and its labels, checked before anything is written.

Every export writes only inside its ``--out`` folder:

- ``file_name`` entries that are absolute or climb out (``../x.jpg``) are refused
  (``check_file_names``), so no path built from them can leave the folder;
- images whose names differ only in their extension (``a.jpg``, ``a.png``) would share one label file
  (``labels/a.txt``); all but the first get a distinct, deterministic name (``a_png.png``,
  ``paths.distinct_names``) and the renames are reported (``plan_images``);
- with a validation split, each image's split is drawn from a seeded hash of its own file name, so
  adding images to a dataset never moves an image between the splits (``split_names``);
- photos with an EXIF orientation other than upright are placed as upright copies, since the masks
  are in the upright frame and many loaders (plain PIL, torchvision's ``CocoDetection``) ignore the
  orientation tag; other images are linked (or copied with ``--copy-images``).

The folder itself (checks, staging, ``--overwrite``) is ``out_folder``'s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..paths import distinct_names

UPRIGHT = 1  # the EXIF orientation of an image stored as it is displayed
JPEG_QUALITY = 95  # upright copies of JPEG photos


def unsafe_file_name(file_name: Any) -> str | None:
    """Why ``file_name`` cannot name a file inside an export folder, or None when it can.

    Valid names are relative POSIX paths that stay inside their folder: no absolute path, drive or
    ``..`` component, no backslash, no empty name.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        return "it is empty or not a string"
    if "\\" in file_name or PureWindowsPath(file_name).drive:
        return "it has a backslash or a drive letter; use relative paths with '/'"
    path = PurePosixPath(file_name)
    if path.is_absolute():
        return "it is an absolute path; file names must be relative to the image folder"
    if ".." in path.parts:
        return "it climbs out of the image folder ('..')"
    if path.name in ("", ".") or not path.suffix:
        return "it does not name a file with an extension"
    return None


def check_file_names(images: Sequence[dict[str, Any]], *, source: Path) -> None:
    """Refuse a COCO file whose images could be written, linked or deleted outside an export folder."""
    for image in images:
        why = unsafe_file_name(image.get("file_name"))
        if why is not None:
            raise ValueError(
                f"{str(source)!r}: image {image.get('id')!r} has file_name {image.get('file_name')!r}, which {why}. "
                "Exports only write inside --out; fix the file names (relative to the labelled folder)."
            )


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of an image file (1, upright, when absent). Raises ``ValueError`` for a
    file that is not a readable image."""
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, UPRIGHT) or UPRIGHT)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image {str(path)!r} cannot be read ({error})") from error


@dataclass(frozen=True)
class PlacedImage:
    """One image of an export: where it comes from and its path inside the export's images folder."""

    image: dict[str, Any]  # the COCO image entry
    source: Path  # the labelled file
    name: str  # path under the export's images folder (and of its label file, extension changed)
    split: str | None  # "train", "val", or None without a split
    rotated: bool  # stored with an EXIF orientation: placed as an upright copy

    @property
    def relative(self) -> str:
        """Path under ``images/`` (and ``labels/``), with the split folder first."""
        return f"{self.split}/{self.name}" if self.split else self.name


def split_draw(file_name: str, seed: int) -> float:
    """A number in [0, 1) fixed by the file name and the seed alone (SHA-256, the same on every machine
    and Python)."""
    digest = hashlib.sha256(f"{seed}\0{file_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_names(file_names: Sequence[str], *, val_fraction: float | None, seed: int) -> dict[str, str | None]:
    """file name -> "train" / "val" (None for every name without a split): an image is in the validation
    split when its ``split_draw`` is below ``val_fraction``. Each image's split depends only on its own
    name and the seed, so adding or removing images never moves another one; the share of validation
    images is ``val_fraction`` on average, not exactly."""
    if val_fraction is None:
        return {name: None for name in file_names}
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction {val_fraction:g} must lie strictly between 0 and 1")
    return {name: "val" if split_draw(name, seed) < val_fraction else "train" for name in file_names}


def plan_images(
    images: Sequence[dict[str, Any]], image_path: Any, *, val_fraction: float | None = None, seed: int = 0
) -> list[PlacedImage]:
    """The placement of every image (``image_path``: COCO image entry -> its file), checked first:
    a missing or unreadable image is refused here, before anything is written."""
    names = [image["file_name"] for image in images]
    export_names = distinct_names(names)
    splits = split_names(names, val_fraction=val_fraction, seed=seed)
    placed = []
    for image in images:
        source = Path(image_path(image))
        if not source.is_file():
            raise FileNotFoundError(f"image {str(source)!r} does not exist; pass the labelled folder with --images")
        placed.append(
            PlacedImage(
                image=image,
                source=source,
                name=export_names[image["file_name"]],
                split=splits[image["file_name"]],
                rotated=exif_orientation(source) != UPRIGHT,
            )
        )
    return placed


def renames(placed: Sequence[PlacedImage]) -> list[str]:
    """Lines ``old -> new`` for the images that were given another name."""
    return [f"{p.image['file_name']} -> {p.name}" for p in placed if p.name != p.image["file_name"]]


def save_upright(source: Path, target: Path) -> None:
    """Write the image with its EXIF orientation applied and the tag removed, in the same format."""
    with Image.open(source) as image:
        upright = ImageOps.exif_transpose(image)
        options = {"quality": JPEG_QUALITY} if image.format in ("JPEG", "MPO") else {}
        exif = upright.getexif()
        exif.pop(0x0112, None)
        upright.save(target, format="JPEG" if image.format == "MPO" else image.format, exif=exif, **options)


def place_images(placed: Sequence[PlacedImage], images_dir: Path, *, copy: bool) -> None:
    """Link (default) or copy each image to ``images_dir / relative``; rotated photos as upright copies."""
    for item in placed:
        target = images_dir / item.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.rotated:
            save_upright(item.source, target)
        elif copy:
            shutil.copy2(item.source, target)
        else:
            os.symlink(item.source.resolve(), target)


def write_images(
    images: Sequence[dict[str, Any]],
    image_path: Any,
    out_dir: Path,
    *,
    placed: Sequence[PlacedImage] | None,
    copy: bool,
) -> list[PlacedImage]:
    """Write every image under ``out_dir / "images"`` as ``placed`` says; without ``placed``, each image
    under its own name, without a split (planned and checked here by ``plan_images``). Returns the
    placement."""
    placed = list(placed) if placed is not None else plan_images(images, image_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    place_images(placed, out_dir / "images", copy=copy)
    return placed
