"""How the paths a command reads and the paths it writes relate, so that no output lands on an input.

File names here are relative POSIX paths, as COCO ``file_name`` entries and ``find_images`` give them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, after resolving links and ``..``."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def overlapping(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether one of two folders is, or lies inside, the other."""
    return is_within(a, b) or is_within(b, a)


def collision_key(name: str) -> str:
    """Names that share this key would share a label or overlay file: the path without its extension,
    case folded (case-insensitive file systems merge ``A.txt`` and ``a.txt``)."""
    return str(PurePosixPath(name).with_suffix("")).casefold()


def distinct_names(file_names: Sequence[str]) -> dict[str, str]:
    """file name -> a name no other file of the list shares up to its extension, in order: the first of
    each colliding group keeps its name, the others become ``<stem>_<ext><ext>`` (then
    ``<stem>_<ext>_2<ext>``, ...): deterministic for a given list."""
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


def overlay_names(file_names: Sequence[str]) -> dict[str, str]:
    """file name -> its overlay's name (JPEG), by the exports' distinct-name rule: ``a.jpg`` and
    ``a.png`` get ``a.jpg`` and ``a_png.jpg``, never one file."""
    return {
        name: str(PurePosixPath(distinct).with_suffix(".jpg")) for name, distinct in distinct_names(file_names).items()
    }
