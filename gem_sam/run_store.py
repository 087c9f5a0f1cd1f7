"""Per-image results of a labelling or evaluation run on disk, so that runs resume and lose nothing.

For an output file ``out.json`` the results live in ``out.json.records/``: ``run.json`` holds the
run's settings, and each finished image has one JSON record named after a hash of its relative path,
written to a temporary file and renamed into place (an interrupted write leaves no record). The
COCO file is assembled from the records, so an interrupted run and an uninterrupted one give the
same file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .coco import LabelledImage, write_json_atomic


class RunMismatchError(RuntimeError):
    """The output folder holds results made with other settings or another vocabulary."""


def _describe_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return ", ".join(keys) or "format"


class RunStore:
    """The records folder of one output file."""

    def __init__(self, out_path: str | os.PathLike, *, settings: dict[str, Any], restart: bool = False) -> None:
        self.out_path = Path(out_path)
        self.folder = self.out_path.parent / f"{self.out_path.name}.records"
        self.settings = json.loads(json.dumps(settings))  # normalise tuples etc. to their JSON form
        manifest = self.folder / "run.json"
        if not self.out_path.parent.is_dir():
            raise FileNotFoundError(f"the folder of --out {str(self.out_path)!r} does not exist")
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError as error:
            raise PermissionError(f"cannot write next to --out {str(self.out_path)!r}: {error}") from error
        if not os.access(self.folder, os.W_OK):
            raise PermissionError(f"cannot write to {str(self.folder)!r}; choose another --out")
        if manifest.exists() and not restart:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
            if previous != self.settings:
                raise RunMismatchError(
                    f"{str(self.folder)!r} holds results of a run with other settings "
                    f"({_describe_differences(previous, self.settings)} differ). Use another --out, "
                    "or pass --restart to discard those results."
                )
        elif restart:
            for record in self.folder.glob("*.json"):
                record.unlink()
        write_json_atomic(self.settings, manifest)

    @classmethod
    def attach(cls, out_path: str | os.PathLike) -> RunStore:
        """The records folder of a run that a ``RunStore(...)`` in another process has set up and
        checked (for worker processes, which only save and read records)."""
        store = cls.__new__(cls)
        store.out_path = Path(out_path)
        store.folder = store.out_path.parent / f"{store.out_path.name}.records"
        store.settings = json.loads((store.folder / "run.json").read_text(encoding="utf-8"))
        return store

    def _record_path(self, file_name: str) -> Path:
        digest = hashlib.sha1(file_name.encode("utf-8")).hexdigest()
        return self.folder / f"img-{digest}.json"

    def has(self, file_name: str) -> bool:
        return self._record_path(file_name).exists()

    def save(self, labelled: LabelledImage) -> None:
        self.save_record(labelled.file_name, labelled.to_json())

    def load(self, file_name: str) -> LabelledImage:
        return LabelledImage.from_json(self.load_record(file_name))

    def save_record(self, name: str, record: dict[str, Any]) -> None:
        """Save any JSON record under ``name`` (an image's path or id), atomically."""
        write_json_atomic(record, self._record_path(name))

    def load_record(self, name: str) -> dict[str, Any]:
        return json.loads(self._record_path(name).read_text(encoding="utf-8"))
