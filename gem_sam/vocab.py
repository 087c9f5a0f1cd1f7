"""Reading a vocabulary file: one class per line; blank lines and lines starting with ``#`` ignored."""

from __future__ import annotations

import os
from pathlib import Path

from .text import validate_vocabulary


def parse_vocabulary(text: str) -> list[str]:
    """Class names from the text of a vocabulary file (validated: non-empty, no duplicates)."""
    stripped = (line.strip() for line in text.splitlines())
    return validate_vocabulary([name for name in stripped if name and not name.startswith("#")])


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """Class names from a UTF-8 vocabulary file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {str(path)!r} does not exist (one class name per line)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"vocabulary file {str(path)!r} is not UTF-8 text: {error}") from error
    try:
        return parse_vocabulary(text)
    except ValueError as error:
        raise ValueError(f"vocabulary file {str(path)!r}: {error}") from error
