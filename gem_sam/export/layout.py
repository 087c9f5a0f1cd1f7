"""Where an export puts each image and its labels, checked before anything is written.

Every export writes only inside its ``--out`` folder:

- ``file_name`` entries that are absolute or climb out (``../x.jpg``) are refused
  (``check_file_names``), so no path built from them can leave the folder;
- images whose names differ only in their extension (``a.jpg``, ``a.png``) would share one label file
  (``labels/a.txt``); all but the first get a distinct, deterministic name (``a_png.png``) and the
  renames are reported (``plan_images``);
- photos with an EXIF orientation other than upright are placed as upright copies, since the masks
  are in the upright frame and many loaders (plain PIL, torchvision's ``CocoDetection``) ignore the
  orientation tag; other images are linked (or copied with ``--copy-images``);
- ``prepare_out_dir`` refuses a non-empty folder unless ``--overwrite``, and then replaces only the
  contents of an earlier gem_sam export (marked by ``.gem_sam_export``), never another folder's files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

EXPORT_MARKER = ".gem_sam_export"  # written into every export folder; --overwrite replaces only those
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


def collision_key(name: str) -> str:
    """Names that share this key would share a label file: the path without its extension, case folded
    (case-insensitive file systems merge ``A.txt`` and ``a.txt``)."""
    return str(PurePosixPath(name).with_suffix("")).casefold()


def distinct_names(file_names: Sequence[str]) -> dict[str, str]:
    """file name -> export name, in order: the first of each colliding group keeps its name, the
    others become ``<stem>_<ext><ext>`` (then ``<stem>_<ext>_2<ext>``, ...): deterministic for a
    given list."""
    taken = {collision_key(name) for name in file_names}
    used: set[str] = set()
    out: dict[str, str] = {}
    for name in file_names:
        candidate = name
        if collision_key(name) in used:
            path = PurePosixPath(name)
            base = f"{path.stem}_{path.suffix[1:]}"
            candidate = str(path.with_name(base + path.suffix))
            counter = 2
            while collision_key(candidate) in used or collision_key(candidate) in taken:
                candidate = str(path.with_name(f"{base}_{counter}{path.suffix}"))
                counter += 1
        used.add(collision_key(candidate))
        out[name] = candidate
    return out


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


def split_names(file_names: Sequence[str], *, val_fraction: float | None, seed: int) -> dict[str, str | None]:
    """file name -> "train" / "val" (None for every name without a split): a seeded draw of
    ``round(val_fraction * n)`` validation images, at least one of each split when there are two images
    or more. The same names, fraction and seed always give the same split."""
    if val_fraction is None:
        return {name: None for name in file_names}
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction {val_fraction:g} must lie strictly between 0 and 1")
    ordered = sorted(file_names)
    n_val = min(len(ordered) - 1, max(1, round(val_fraction * len(ordered)))) if len(ordered) > 1 else 0
    val = set(random.Random(seed).sample(ordered, n_val))
    return {name: "val" if name in val else "train" for name in file_names}


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


def clear_export(out_dir: Path) -> None:
    """Remove the contents of an earlier export (links are removed, never followed)."""
    for entry in out_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def prepare_out_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Check the output folder; raises before anything is written. A non-empty folder is refused
    unless ``overwrite``, and even then unless it is an earlier gem_sam export (``EXPORT_MARKER``).
    Call ``start_export`` once every other check has passed."""
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {str(path)!r} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--out {str(path)!r} is not empty; choose an empty folder or pass --overwrite")
        if not (out_dir / EXPORT_MARKER).is_file():
            raise FileExistsError(
                f"--out {str(path)!r} is not empty and is not a gem_sam export (it has no {EXPORT_MARKER} file); "
                "--overwrite only replaces an earlier export. Choose an empty folder."
            )
    return out_dir


def start_export(out_dir: Path, *, export_format: str) -> None:
    """Empty an earlier export in ``out_dir`` (checked by ``prepare_out_dir``), create it and mark it."""
    if out_dir.is_dir():
        clear_export(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EXPORT_MARKER).write_text(json.dumps({"format": export_format}) + "\n", encoding="utf-8")
