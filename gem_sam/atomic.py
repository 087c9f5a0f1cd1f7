"""Atomic file writes: readers see the old file or the complete new one, never a partial one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, *, binary: bool = False) -> Iterator[IO]:
    """Yield a temporary file in ``path``'s folder; when the block ends without an error it is flushed
    to disk and renamed to ``path``, otherwise it is removed."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write JSON (UTF-8, non-ASCII kept) to ``path`` atomically (see ``atomic_write``)."""
    with atomic_write(path) as out:
        json.dump(data, out, ensure_ascii=False)
