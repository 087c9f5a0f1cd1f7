"""Reading the OpenImages V7 files, including malformed ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gem_sam.evaluation.openimages import list_image_ids, read_class_descriptions, read_point_labels, select_image_ids

HEADER = "ImageId,X,Y,Label,EstimatedYesNo,Source,YesVotes,NoVotes,UnsureVotes,TextLabel\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    return write(tmp_path / "classes.csv", "LabelName,DisplayName\n/m/cat,Cat\n/m/dog,Dog\n")


def test_reads_points_of_selected_images(tmp_path: Path, classes: Path) -> None:
    points = write(
        tmp_path / "points.csv",
        HEADER
        + "img2,0.5,0.25,/m/cat,yes,ih,3,0,0,\n"
        + "img1,0.1,0.2,/m/dog,no,ih,0,3,0,\n"
        + "img2,1.0,0.0,/m/dog,unsure,ih,1,1,1,\n"
        + "img1,0.3,0.4,/m/cat,YES,ih,3,0,0,\n",
    )
    names = read_class_descriptions(classes)
    assert names == {"/m/cat": "Cat", "/m/dog": "Dog"}
    assert list_image_ids(points) == ["img1", "img2"]
    labels = read_point_labels(points, image_ids=["img2"], classes=names)
    assert list(labels) == ["img2"]
    img2 = labels["img2"]
    np.testing.assert_allclose(img2.x, [0.5, 1.0])
    assert img2.label == ["/m/cat", "/m/dog"] and img2.answer.tolist() == [1, -1]
    assert img2.evaluated_classes() == ["/m/cat"]


@pytest.mark.parametrize(
    "row,message",
    [
        ("img1,abc,0.2,/m/cat,yes,ih,3,0,0,\n", "X='abc' is not a number in \\[0, 1\\]"),
        ("img1,0.2,1.5,/m/cat,yes,ih,3,0,0,\n", "Y='1.5'"),
        ("img1,0.2,0.2,/m/unknown,yes,ih,3,0,0,\n", "Label '/m/unknown' is not in the class descriptions"),
        ("img1,0.2,0.2,/m/cat,maybe,ih,3,0,0,\n", "EstimatedYesNo='maybe'; expected yes, no or unsure"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, classes: Path, row: str, message: str) -> None:
    points = write(tmp_path / "points.csv", HEADER + "img1,0.5,0.5,/m/cat,yes,ih,3,0,0,\n" + row)
    with pytest.raises(ValueError, match=f"line 3: {message}"):
        read_point_labels(points, image_ids=["img1"], classes=read_class_descriptions(classes))


def test_missing_columns(tmp_path: Path) -> None:
    points = write(tmp_path / "points.csv", "ImageId,X,Label\nimg1,0.1,/m/cat\n")
    with pytest.raises(ValueError, match="lacks the column\\(s\\) Y, EstimatedYesNo; found: ImageId, X, Label"):
        list_image_ids(points)
    classes = write(tmp_path / "classes.csv", "MID,Name\n/m/cat,Cat\n")
    with pytest.raises(ValueError, match="LabelName, DisplayName"):
        read_class_descriptions(classes)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_class_descriptions(tmp_path / "nope.csv")


def test_subset_is_reproducible() -> None:
    ids = [f"img{i:03d}" for i in range(100)]
    first = select_image_ids(ids, limit=10, seed=3)
    assert first == select_image_ids(list(reversed(ids)), limit=10, seed=3)
    assert first != select_image_ids(ids, limit=10, seed=4)
    assert len(first) == 10 and first == sorted(first)
    assert select_image_ids(ids, limit=None, seed=0) == ids
    with pytest.raises(ValueError, match="--limit 0"):
        select_image_ids(ids, limit=0, seed=0)
