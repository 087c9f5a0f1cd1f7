"""Reading OpenImages V7 point labels and class descriptions (columns found by header name).

``oidv7-*-annotations-point-labels.csv``: ImageId, X, Y (normalised to [0, 1] over width and height),
Label (a MID such as /m/01g317), EstimatedYesNo (yes | no | unsure), and more columns we do not need.
``oidv7-class-descriptions.csv``: LabelName, DisplayName.

The point file has millions of rows; it is streamed, and only the points of the selected images are
kept, as small arrays per image.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POINT_COLUMNS = ("ImageId", "X", "Y", "Label", "EstimatedYesNo")
CLASS_COLUMNS = ("LabelName", "DisplayName")
ANSWERS = {"yes": 1, "no": 0, "unsure": -1}


@dataclass
class ImagePoints:
    """The point labels of one image; arrays of length P (points)."""

    image_id: str
    x: np.ndarray  # [P] float64, normalised column coordinate in [0, 1]
    y: np.ndarray  # [P] float64, normalised row coordinate in [0, 1]
    label: list[str]  # [P] class MIDs
    answer: np.ndarray  # [P] int8: 1 yes, 0 no, -1 unsure

    def evaluated_classes(self) -> list[str]:
        """MIDs with at least one yes-point, in order of first appearance."""
        return list(dict.fromkeys(mid for mid, answer in zip(self.label, self.answer, strict=True) if answer == 1))


def _reader(path: Path, required: tuple[str, ...], what: str) -> tuple[csv.DictReader, object]:
    handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the caller
    reader = csv.DictReader(handle)
    missing = [name for name in required if name not in (reader.fieldnames or [])]
    if missing:
        handle.close()
        raise ValueError(
            f"{what} {str(path)!r} lacks the column(s) {', '.join(missing)}; "
            f"found: {', '.join(reader.fieldnames or []) or 'no header'}"
        )
    return reader, handle


def read_class_descriptions(path: str | os.PathLike) -> dict[str, str]:
    """MID -> display name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class descriptions file {str(path)!r} does not exist")
    reader, handle = _reader(path, CLASS_COLUMNS, "class descriptions file")
    with handle:
        names = {}
        for row in reader:
            if not row["LabelName"] or not row["DisplayName"]:
                raise ValueError(f"{str(path)!r} line {reader.line_num}: empty LabelName or DisplayName")
            names[row["LabelName"]] = row["DisplayName"]
    return names


def _coordinate(value: str, name: str, path: Path, line: int) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{str(path)!r} line {line}: {name}={value!r} is not a number in [0, 1]")
    return number


def list_image_ids(points_csv: str | os.PathLike) -> list[str]:
    """The distinct ImageIds of a point-label file, sorted."""
    path = Path(points_csv)
    if not path.is_file():
        raise FileNotFoundError(f"point labels file {str(path)!r} does not exist")
    reader, handle = _reader(path, POINT_COLUMNS, "point labels file")
    with handle:
        return sorted({row["ImageId"] for row in reader})


def select_image_ids(all_ids: list[str], *, limit: int | None, seed: int) -> list[str]:
    """A reproducible subset: ``limit`` ids drawn with ``random.Random(seed)`` from the sorted ids."""
    ordered = sorted(all_ids)
    if limit is None or limit >= len(ordered):
        return ordered
    if limit < 1:
        raise ValueError(f"--limit {limit} must be at least 1")
    return sorted(random.Random(seed).sample(ordered, limit))


def read_point_labels(
    points_csv: str | os.PathLike, *, image_ids: Iterable[str], classes: dict[str, str]
) -> dict[str, ImagePoints]:
    """Points of the given images, streamed from the CSV. Unknown labels and bad values are errors."""
    path = Path(points_csv)
    wanted = set(image_ids)
    reader, handle = _reader(path, POINT_COLUMNS, "point labels file")
    rows: dict[str, tuple[list, list, list, list]] = {image_id: ([], [], [], []) for image_id in wanted}
    with handle:
        for row in reader:
            image_id = row["ImageId"]
            if image_id not in wanted:
                continue
            line = reader.line_num
            answer = row["EstimatedYesNo"].strip().lower()
            if answer not in ANSWERS:
                raise ValueError(
                    f"{str(path)!r} line {line}: EstimatedYesNo={row['EstimatedYesNo']!r}; expected yes, no or unsure"
                )
            if row["Label"] not in classes:
                raise ValueError(
                    f"{str(path)!r} line {line}: Label {row['Label']!r} is not in the class descriptions file"
                )
            xs, ys, labels, answers = rows[image_id]
            xs.append(_coordinate(row["X"], "X", path, line))
            ys.append(_coordinate(row["Y"], "Y", path, line))
            labels.append(row["Label"])
            answers.append(ANSWERS[answer])
    return {
        image_id: ImagePoints(image_id, np.array(xs), np.array(ys), labels, np.array(answers, dtype=np.int8))
        for image_id, (xs, ys, labels, answers) in rows.items()
        if xs
    }
