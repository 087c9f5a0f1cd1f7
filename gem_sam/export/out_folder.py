"""The export folder (``--out``): checked before any write, written beside it, swapped in at the end.

- ``--out`` may not hold the export's inputs (the annotations file, the labelled images) nor lie inside
  the labelled folder, where the next labelling run would find its copies and links as photos;
- a non-empty ``--out`` is refused unless ``--overwrite``, and ``--overwrite`` replaces only the files
  that an earlier gem_sam export wrote there: its marker (``.gem_sam_export``) lists them. Anything
  else in the folder stays where it is, and the export names it;
- the export is written into a staging folder beside ``--out``; only when it is complete are the
  earlier export's files removed and the new ones moved in. A failure leaves the earlier export as it
  was and removes the staging folder.

Paths in the marker are relative POSIX paths of files and links (never folders).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..atomic import write_json_atomic
from ..paths import is_within

EXPORT_MARKER = ".gem_sam_export"  # lists the files an export wrote; --overwrite replaces only those
MARKER_FORMAT = 2  # {"format": 2, "export": <format>, "files": [...]}


@dataclass(frozen=True)
class OutFolder:
    """A checked export folder: its path, what an earlier export wrote there, and what else it holds."""

    path: Path
    earlier_files: frozenset[str]  # relative paths the earlier export's marker lists: replaced
    others: tuple[str, ...]  # relative paths of files no gem_sam export wrote: left in place

    def kept_lines(self) -> list[str]:
        """Summary lines naming what the export left in the folder."""
        if not self.others:
            return []
        shown = ", ".join(self.others[:10]) + (f" and {len(self.others) - 10} more" if len(self.others) > 10 else "")
        return [f"left in {str(self.path)!r} (not written by a gem_sam export): {shown}"]


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of every file and link under ``folder`` (links are not followed)."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        base = Path(directory).relative_to(folder)
        for name in files + [d for d in subdirs if (Path(directory) / d).is_symlink()]:
            found.append((base / name).as_posix())
    return sorted(found)


def _marker_files(path: Path, marker: Path) -> frozenset[str]:
    try:
        listed = json.loads(marker.read_text(encoding="utf-8"))
        files = listed["files"] if listed.get("format") == MARKER_FORMAT else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        files = None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise FileExistsError(
            f"--out {str(path)!r} holds an export of an older gem_sam, whose marker does not list the files it "
            "wrote, so --overwrite cannot tell them from yours; empty the folder yourself or choose another"
        )
    unsafe = [name for name in files if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts]
    if unsafe:
        raise FileExistsError(f"{str(marker)!r} lists {unsafe[0]!r}, outside the folder; it was not written by gem_sam")
    return frozenset(files)


def check_out_folder(
    path: str | os.PathLike, *, overwrite: bool, inputs: Mapping[str, Path | None], photo_folder: Path | None = None
) -> OutFolder:
    """Check ``--out`` before anything is written; raises naming the path and what to do.

    inputs: what the export reads ({"the annotations file": path, ...}), none of which ``--out`` may
    hold; photo_folder: the labelled folder, for exports that write images, which ``--out`` may not lie in.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(path)!r} is a file; give a folder")
    for what, source in inputs.items():
        if source is not None and is_within(source, out):
            raise ValueError(
                f"--out {str(path)!r} holds {what} ({str(source)!r}), which an export must not replace; "
                "choose a folder outside it"
            )
    if photo_folder is not None and is_within(out, photo_folder):
        raise ValueError(
            f"--out {str(path)!r} lies inside the labelled folder {str(photo_folder)!r}, where the next labelling "
            "run would find the exported images as photos; choose a folder outside it"
        )
    if not out.is_dir() or not any(out.iterdir()):
        return OutFolder(out, frozenset(), ())
    if not overwrite:
        raise FileExistsError(f"--out {str(path)!r} is not empty; choose an empty folder or pass --overwrite")
    marker = out / EXPORT_MARKER
    if not marker.is_file():
        raise FileExistsError(
            f"--out {str(path)!r} is not empty and is not a gem_sam export (it has no {EXPORT_MARKER} file); "
            "--overwrite only replaces an earlier export. Choose an empty folder."
        )
    earlier = _marker_files(out, marker)
    others = tuple(name for name in _files_under(out) if name not in earlier and name != EXPORT_MARKER)
    return OutFolder(out, earlier, others)


def _conflicts(staged: list[str], folder: OutFolder) -> list[str]:
    """Paths in ``--out`` that no earlier export wrote and that a staged file would replace: the file's
    own path (a file, link or folder there), or one of its folders (a file or link there)."""
    out = set()
    for name in staged:
        path = PurePosixPath(name)
        own = folder.path / path
        if (own.exists() or own.is_symlink()) and name not in folder.earlier_files:
            out.add(name)
        for parent in path.parents[:-1]:
            target = folder.path / parent
            if (target.is_symlink() or target.is_file()) and parent.as_posix() not in folder.earlier_files:
                out.add(parent.as_posix())
    return sorted(out)


def _remove_earlier(folder: OutFolder) -> None:
    """Delete the earlier export's listed files (links unlinked, never followed), then the folders they
    leave empty."""
    parents = set()
    for name in folder.earlier_files:
        target = folder.path / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        parents.update(PurePosixPath(name).parents[:-1])
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        directory = folder.path / parent
        if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
            directory.rmdir()


@contextmanager
def staged_export(folder: OutFolder, *, export_format: str) -> Iterator[Path]:
    """Yield a staging folder beside ``--out`` to write the export into; when the block ends without an
    error, the earlier export's files are replaced by the staged ones and the marker lists them. On an
    error the staging folder is removed and ``--out`` is as it was."""
    out = folder.path
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".gem_sam-staging"))
    try:
        yield staging
        staged = _files_under(staging)
        conflicts = _conflicts(staged, folder)
        if conflicts:
            raise FileExistsError(
                f"--out {str(out)!r} holds {conflicts[0]!r}, which no gem_sam export wrote and this export would "
                "replace; move it away or choose another folder (nothing was changed)"
            )
        if not out.exists() or (not folder.earlier_files and not any(out.iterdir())):
            if out.exists():
                out.rmdir()  # empty: the staged folder takes its place
            os.replace(staging, out)
        else:
            _remove_earlier(folder)
            for name in staged:
                target = out / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, target)
        write_json_atomic({"format": MARKER_FORMAT, "export": export_format, "files": staged}, out / EXPORT_MARKER)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
