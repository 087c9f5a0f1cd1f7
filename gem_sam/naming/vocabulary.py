"""Reading a vocabulary file: one class per line; blank lines and lines starting with ``#`` ignored."""

from __future__ import annotations

import os
from pathlib import Path

from .text import validate_vocabulary


def parse_vocabulary(text: str) -> list[str]:
    """Class names from the text of a vocabulary file (validated: non-empty, no duplicates). Errors
    give the file's line numbers (1-based)."""
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in first_line:
            raise ValueError(
                f"line {number} repeats {name!r} from line {first_line[name]}; each class must appear once"
            )
        first_line[name] = number
    return validate_vocabulary(list(first_line))


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
