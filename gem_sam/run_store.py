"""Per-item results of a labelling or evaluation run on disk, so that runs resume and lose nothing.

For an output file ``out.json`` the results live in ``out.json.records/``: ``run.json`` holds the
run's settings (and, for a labelling run, the folder it labels), and each finished item has one JSON
record named after a hash of its key, written to a temporary file and renamed into place (an
interrupted write leaves no record). The COCO file is assembled from the records, so an interrupted
run and an uninterrupted one give the same file.

A labelling record's key (``image_key``) is the image's relative path *and* its fingerprint (size and modification
time, ``file_fingerprint``): a record is only ever reused for the same file, unchanged, of the same
folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic

MANIFEST_FORMAT = 2  # run.json layout: {"format", "settings", "images_dir"}


class RunMismatchError(RuntimeError):
    """The output folder holds results made with other settings, another vocabulary or another folder."""


def _describe_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return ", ".join(keys) or "format"


def file_fingerprint(path: str | os.PathLike) -> str:
    """``"<size>-<mtime in ns>"`` of a file: a record made from another file or an edited one never
    matches. Raises ``OSError`` when the file cannot be read."""
    stat = os.stat(path)
    return f"{stat.st_size}-{stat.st_mtime_ns}"


RECORD_VERSION = 3  # what a labelling record holds; 3: each mask's margin and entropy


def image_key(file_name: str, fingerprint: str) -> str:
    """The record key of an image: its relative path, its fingerprint and the record version, so that
    a record of an older gem_sam (without the fields this one writes) is labelled again, not reused."""
    return f"{file_name}\0{fingerprint}\0v{RECORD_VERSION}"


def records_folder(out_path: str | os.PathLike) -> Path:
    """The records folder of an output file: ``<out>.records`` beside it."""
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.name}.records"


def check_resumable(
    out_path: str | os.PathLike, *, settings: dict[str, Any], images_dir: str | os.PathLike | None = None
) -> None:
    """Refuse, without writing anything, to resume into ``out_path`` when its records came from other
    settings or another folder (``RunMismatchError``); nothing to check when it has none."""
    folder = records_folder(out_path)
    manifest = folder / "run.json"
    if not manifest.is_file():
        return
    previous = json.loads(manifest.read_text(encoding="utf-8"))
    settings = json.loads(json.dumps(settings))  # tuples etc. in their JSON form, as stored
    images_dir = str(Path(images_dir).resolve()) if images_dir is not None else None
    if previous.get("format") != MANIFEST_FORMAT:
        raise RunMismatchError(
            f"{str(folder)!r} holds results of an older gem_sam version, which cannot be checked "
            "against the files they came from. Use another --out, or pass --restart to discard them."
        )
    if previous["settings"] != settings:
        raise RunMismatchError(
            f"{str(folder)!r} holds results of a run with other settings "
            f"({_describe_differences(previous['settings'], settings)} differ). Use another --out, "
            "or pass --restart to discard those results."
        )
    if previous.get("images_dir") != images_dir:
        raise RunMismatchError(
            f"{str(folder)!r} holds results of labelling the folder {previous.get('images_dir')!r}, "
            f"not {images_dir!r}; a run resumes only the folder it started with. Use another --out "
            "for this folder, or pass --restart to discard those results."
        )


class RunStore:
    """The records folder of one output file.

    ``images_dir``: the folder a labelling run labels; a run into the same ``--out`` with another
    folder is refused (``RunMismatchError``) instead of reusing records of files with the same names.
    """

    def __init__(
        self,
        out_path: str | os.PathLike,
        *,
        settings: dict[str, Any],
        restart: bool = False,
        images_dir: str | os.PathLike | None = None,
    ) -> None:
        self.out_path = Path(out_path)
        self.folder = records_folder(out_path)
        self.settings = json.loads(json.dumps(settings))  # normalise tuples etc. to their JSON form
        self.images_dir = str(Path(images_dir).resolve()) if images_dir is not None else None
        manifest = self.folder / "run.json"
        if not self.out_path.parent.is_dir():
            raise FileNotFoundError(f"the folder of --out {str(self.out_path)!r} does not exist")
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError as error:
            raise PermissionError(f"cannot write next to --out {str(self.out_path)!r}: {error}") from error
        if not os.access(self.folder, os.W_OK):
            raise PermissionError(f"cannot write to {str(self.folder)!r}; choose another --out")
        if not restart:
            check_resumable(self.out_path, settings=self.settings, images_dir=self.images_dir)
        else:
            for record in self.folder.glob("*.json"):
                record.unlink()
        write_json_atomic(
            {"format": MANIFEST_FORMAT, "settings": self.settings, "images_dir": self.images_dir}, manifest
        )

    @classmethod
    def attach(cls, out_path: str | os.PathLike) -> RunStore:
        """The records folder of a run that a ``RunStore(...)`` in another process has set up and
        checked (for worker processes, which only save and read records)."""
        store = cls.__new__(cls)
        store.out_path = Path(out_path)
        store.folder = records_folder(out_path)
        manifest = json.loads((store.folder / "run.json").read_text(encoding="utf-8"))
        store.settings = manifest["settings"]
        store.images_dir = manifest["images_dir"]
        return store

    def _record_path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
        return self.folder / f"img-{digest}.json"

    def has(self, key: str) -> bool:
        return self._record_path(key).exists()

    def save_record(self, key: str, record: dict[str, Any]) -> None:
        """Save any JSON record under ``key`` (an image's key or an item id), atomically."""
        write_json_atomic(record, self._record_path(key))

    def load_record(self, key: str) -> dict[str, Any]:
        return json.loads(self._record_path(key).read_text(encoding="utf-8"))

    def prune(self, keep: list[str]) -> int:
        """Delete the records not under these keys (results of files that changed or left the folder);
        returns how many were deleted."""
        wanted = {self._record_path(key).name for key in keep}
        stale = [path for path in self.folder.glob("img-*.json") if path.name not in wanted]
        for path in stale:
            path.unlink()
        return len(stale)
