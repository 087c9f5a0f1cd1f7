"""No command replaces, deletes or mixes up a user's files, through the commands users run.

Each case snapshots every file outside the output the user named (and the inputs) and compares them
byte for byte afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gem_sam.cli.import_reviewed import main as import_main

from ..conftest import small_photo
from ..export.test_layout import box_mask, export, write_coco
from .test_label import run as label


def snapshot(folder: Path, *, leave_out: tuple[Path, ...] = ()) -> dict[str, tuple[bool, str]]:
    """Every path under ``folder`` (outside ``leave_out``) -> (is a link, SHA-256 of its content)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if any(path == skip or skip in path.parents for skip in leave_out):
            continue
        content = path.read_bytes() if path.is_file() else b""
        state[str(path.relative_to(folder))] = (path.is_symlink(), hashlib.sha256(content).hexdigest())
    return state


@pytest.fixture
def same_stem_photos(tmp_path: Path) -> Path:
    """``a.jpg`` and ``a.png`` (different photos) and ``b.jpg``."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    small_photo("astronaut.png", long_side=64).convert("RGB").save(folder / "a.jpg")
    small_photo("coffee.png", long_side=64).convert("RGB").save(folder / "a.png")
    small_photo("chelsea.png", long_side=64).convert("RGB").save(folder / "b.jpg")
    return folder


# --- labelling: overlays and --out beside the photos ------------------------------------------------


@pytest.mark.parametrize("where", ["the image folder", "inside it", "its parent"])
def test_overlays_among_the_photos_are_refused(
    same_stem_photos: Path, vocab_file: Path, tmp_path: Path, base_args, where: str
) -> None:
    overlays = {"the image folder": same_stem_photos, "inside it": same_stem_photos / "o", "its parent": tmp_path}
    before = snapshot(tmp_path)
    code, _, err = label(
        ["--images", str(same_stem_photos), "--vocab", str(vocab_file), "--out", str(same_stem_photos / "ann.json"),
         "--save-overlays", str(overlays[where]), *base_args]
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--save-overlays" in err and "image folder" in err
    assert snapshot(tmp_path) == before


def test_overlays_of_images_with_one_stem_are_two_files(
    same_stem_photos: Path, vocab_file: Path, tmp_path: Path, base_args
) -> None:
    overlays = tmp_path / "overlays"
    code, _, _ = label(
        ["--images", str(same_stem_photos), "--vocab", str(vocab_file), "--out", str(tmp_path / "ann.json"),
         "--save-overlays", str(overlays), *base_args]
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in overlays.iterdir()) == ["a.jpg", "a_png.jpg", "b.jpg"]
    for overlay, photo in (("a.jpg", "a.jpg"), ("a_png.jpg", "a.png")):  # each shows its own photo (sizes differ)
        assert Image.open(overlays / overlay).size == Image.open(same_stem_photos / photo).size
    assert Image.open(overlays / "a.jpg").size != Image.open(overlays / "a_png.jpg").size


def test_out_inside_the_image_folder_is_never_labelled(
    same_stem_photos: Path, vocab_file: Path, base_args, tmp_path: Path
) -> None:
    """--out inside --images: what the run writes there (the COCO file, its records, the report
    picture) is left out of the photos, in this run and the next; the photos stay as they were."""
    out = same_stem_photos / "ann.json"
    photos = snapshot(same_stem_photos)
    argv = ["--images", str(same_stem_photos), "--vocab", str(vocab_file), "--out", str(out), *base_args]
    assert label(argv)[0] == 0
    assert Path(f"{out}.report.png").is_file()  # the picture that would be found as a photo
    code, stdout, _ = label(argv)
    assert code == 0 and "images labelled: 0 (plus 3 from an earlier run)" in stdout
    assert [image["file_name"] for image in json.loads(out.read_text())["images"]] == ["a.jpg", "a.png", "b.jpg"]
    other_out = same_stem_photos / "other.json"  # another run's --out: the first run's report is no photo either
    code, stdout, _ = label([*argv[:4], "--out", str(other_out), *argv[6:]])
    assert code == 0 and "images labelled: 3" in stdout
    assert [image["file_name"] for image in json.loads(other_out.read_text())["images"]] == ["a.jpg", "a.png", "b.jpg"]
    assert {k: v for k, v in snapshot(same_stem_photos).items() if k in photos} == photos


def test_out_that_is_not_a_gem_sam_file_is_refused(same_stem_photos: Path, vocab_file: Path, base_args) -> None:
    before = snapshot(same_stem_photos)
    code, _, err = label(
        ["--images", str(same_stem_photos), "--vocab", str(vocab_file), "--out", str(same_stem_photos / "a.jpg"),
         *base_args]
    )  # fmt: skip
    assert code == 2 and "is not a gem_sam annotations file" in err and len(err.strip().splitlines()) == 1
    assert snapshot(same_stem_photos) == before


def test_another_folders_run_is_refused_before_the_models_load(
    same_stem_photos: Path, vocab_file: Path, tmp_path: Path, base_args
) -> None:
    """The SAM checkpoint is garbage by the second run: a run that loaded the models first fails on it."""
    checkpoint = tmp_path / "sam.pth"
    args = [*base_args]
    shutil.copy(args[args.index("--sam-checkpoint") + 1], checkpoint)
    args[args.index("--sam-checkpoint") + 1] = str(checkpoint)
    out = tmp_path / "ann.json"
    assert label(["--images", str(same_stem_photos), "--vocab", str(vocab_file), "--out", str(out), *args])[0] == 0
    other = tmp_path / "other"
    shutil.copytree(same_stem_photos, other)
    checkpoint.write_bytes(b"not a checkpoint")
    code, _, err = label(["--images", str(other), "--vocab", str(vocab_file), "--out", str(out), *args])
    assert code == 2 and "holds results of labelling the folder" in err and "checkpoint" not in err


# --- exports ----------------------------------------------------------------------------------------


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for index, photo in enumerate(["astronaut.png", "coffee.png", "chelsea.png"]):
        small_photo(photo, long_side=40).convert("RGB").save(images / f"{index}.jpg")
        size_hw = np.asarray(Image.open(images / f"{index}.jpg")).shape[:2]
        entries.append((f"{index}.jpg", size_hw, [(1, box_mask(size_hw, 2, 2, 20, 20 + index))]))
    return write_coco(tmp_path / "annotations.json", images, entries, ["person"])


def test_overwrite_never_deletes_its_input_or_the_users_files(run_file: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    assert export(str(run_file), "--to", "yolo-seg", "--out", str(dataset))[0] == 0
    shutil.copy(run_file, dataset / "reviewed.json")
    (dataset / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    code, _, err = export(str(dataset / "reviewed.json"), "--to", "yolo-seg", "--out", str(dataset), "--overwrite")
    assert code == 2 and "holds the annotations file" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before

    code, stdout, _ = export(str(run_file), "--to", "coco-polygons", "--out", str(dataset), "--overwrite")
    assert code == 0 and "notes.txt" in stdout and "reviewed.json" in stdout  # named as left in place
    assert (dataset / "notes.txt").read_text() == "my notes"
    assert (dataset / "reviewed.json").read_bytes() == run_file.read_bytes()
    assert not (dataset / "labels").exists() and not (dataset / "data.yaml").exists()  # the earlier export's
    assert (dataset / "annotations.json").is_file() and sorted(p.name for p in (dataset / "images").iterdir()) == [
        "0.jpg", "1.jpg", "2.jpg"
    ]  # fmt: skip
    assert snapshot(tmp_path / "images") == {
        k[len("images/") :]: v for k, v in before.items() if k.startswith("images/")
    }


@pytest.mark.parametrize("where", ["the image folder", "inside it"])
def test_export_into_the_labelled_folder_is_refused(run_file: Path, tmp_path: Path, where: str) -> None:
    out = tmp_path / "images" if where == "the image folder" else tmp_path / "images" / "yolo"
    before = snapshot(tmp_path)
    code, _, err = export(str(run_file), "--to", "yolo-seg", "--out", str(out), "--overwrite")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "labelled" in err
    assert snapshot(tmp_path) == before


def test_a_failure_half_way_leaves_the_earlier_export_as_it_was(run_file: Path, tmp_path: Path) -> None:
    """The third image's mask has the wrong size: the semantic export fails on it, after the first two
    images were written."""
    dataset = tmp_path / "sem"
    assert export(str(run_file), "--to", "semantic", "--out", str(dataset))[0] == 0
    before = snapshot(tmp_path)
    data = json.loads(run_file.read_text())
    wrong = json.loads(json.dumps(data["annotations"][2]))
    wrong["segmentation"] = {**data["annotations"][0]["segmentation"], "size": [5, 5]}
    data["annotations"][2] = wrong
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    before[broken.name] = snapshot(tmp_path)[broken.name]
    code, _, err = export(str(broken), "--to", "semantic", "--out", str(dataset), "--overwrite")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before  # no staging folder left beside it either


def test_a_coco_file_listing_an_image_twice_is_refused(run_file: Path, tmp_path: Path) -> None:
    data = json.loads(run_file.read_text())
    for key, twin in (
        ("file_name", {**data["images"][0], "id": 9}),
        ("id", {**data["images"][1], "file_name": "x.jpg"}),
    ):
        twice = tmp_path / f"twice_{key}.json"
        twice.write_text(json.dumps({**data, "images": [*data["images"], twin]}))
        before = snapshot(tmp_path)
        code, _, err = export(str(twice), "--to", "yolo-seg", "--out", str(tmp_path / "y"))
        assert code == 2 and f"have the same {key}" in err and len(err.strip().splitlines()) == 1
        assert snapshot(tmp_path) == before


# --- import-reviewed -------------------------------------------------------------------------------


def import_reviewed(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = import_main(list(argv))
    return code, out.getvalue(), err.getvalue()


def label_studio_export(run_file: Path, tmp_path: Path, *, twice: bool) -> Path:
    """The tasks gem_sam exported, as Label Studio exports them after review: each image's predictions
    accepted as they are; with ``twice``, the first image's task imported again and left unreviewed."""
    assert export(str(run_file), "--to", "label-studio", "--out", str(tmp_path / "ls"))[0] == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    exported = []
    for index, task in enumerate(tasks, start=1):
        result = task["predictions"][0]["result"]
        exported.append({**task, "id": index, "annotations": [{"id": index, "result": result, "was_cancelled": False,
                                                               "updated_at": "2026-01-01T00:00:00"}]})  # fmt: skip
    if twice:
        exported.append({**tasks[0], "id": len(tasks) + 1, "annotations": []})
    path = tmp_path / "project-export.json"
    path.write_text(json.dumps(exported))
    return path


def test_import_reviewed_refuses_to_write_over_the_label_studio_export(run_file: Path, tmp_path: Path) -> None:
    project = label_studio_export(run_file, tmp_path, twice=False)
    before = snapshot(tmp_path)
    code, _, err = import_reviewed(str(project), "--run", str(run_file), "--out", str(project))
    assert code == 2 and "the Label Studio export it reads" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_tasks_imported_twice_are_merged_and_the_result_exports(run_file: Path, tmp_path: Path) -> None:
    project = label_studio_export(run_file, tmp_path, twice=True)
    reviewed = tmp_path / "reviewed.json"
    code, stdout, _ = import_reviewed(str(project), "--run", str(run_file), "--out", str(reviewed))
    assert code == 0 and "merged: 1" in stdout and "0.jpg: tasks 1, 4" in stdout
    data = json.loads(reviewed.read_text())
    assert [image["file_name"] for image in data["images"]] == ["0.jpg", "1.jpg", "2.jpg"]
    assert [a["review"] for a in data["annotations"]] == ["kept", "kept", "kept"]
    code, _, _ = export(str(reviewed), "--to", "yolo-seg", "--out", str(tmp_path / "y"))
    assert code == 0 and len(list((tmp_path / "y" / "labels").iterdir())) == 3
