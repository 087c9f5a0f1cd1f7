"""The command line end to end through main([...]) on real photos, with checkpoint files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gem_sam.label import main
from gem_sam.sam import build_mask_generator

from ..conftest import SKIMAGE_DATA, TINY_SAM_NAME, rgb_photo, self_evaluation, small_photo, tiny_sam


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_labels_a_folder_into_valid_coco(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args) -> None:
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "annotations.json"
    code, stdout, _ = run(["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args])
    assert code == 0
    assert "images labelled: 4" in stdout and "images skipped: 1" in stdout and "broken.jpg" in stdout
    assert "s per image" in stdout

    data = json.loads(out.read_text())
    assert [image["file_name"] for image in data["images"]] == [
        "astronaut.png", "camera.png", "logo.png", "nested/chelsea.jpg"
    ]  # fmt: skip
    assert [category["name"] for category in data["categories"]] == ["cat", "person", "rocket"]
    assert len(data["annotations"]) >= 4
    for annotation in data["annotations"]:
        image = data["images"][annotation["image_id"] - 1]
        assert annotation["segmentation"]["size"] == [image["height"], image["width"]]
        assert 1 <= annotation["category_id"] <= 3 and 0.0 < annotation["score"] <= 1.0
    skipped = json.loads(Path(f"{out}.skipped.json").read_text())
    assert [entry["file_name"] for entry in skipped] == ["broken.jpg"]
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert [entry["file_name"] for entry in report["skipped"]] == ["broken.jpg"] and report["n_skipped"] == 1

    assert self_evaluation(out).stats[0] == pytest.approx(1.0, abs=1e-9)


def test_rerun_resumes_and_settings_change_is_refused(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args):
    out = tmp_path / "out.json"
    argv = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args]
    assert run(argv)[0] == 0
    first = out.read_text()
    code, stdout, _ = run(argv)
    assert code == 0 and "images labelled: 0 (plus 4 from an earlier run)" in stdout
    assert out.read_text() == first

    code, _, stderr = run([*argv, "--points-per-side", "2"])
    assert code == 2 and "other settings" in stderr and "mask_generator" in stderr and "--restart" in stderr
    code, stdout, _ = run([*argv, "--points-per-side", "2", "--restart"])
    assert code == 0 and "images labelled: 4 (plus 0" in stdout


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing_folder", "does not exist"),
        ("images_is_a_file", "is not a folder"),
        ("no_images", "no images found"),
        ("empty_vocab", "vocabulary is empty"),
        ("duplicate_vocab", "line 3: class 'cat' is declared again"),
        ("missing_vocab", "vocabulary file"),
        ("missing_sam_checkpoint", "does not exist"),
        ("wrong_sam_architecture", "needs width 768"),
        ("unwritable_output", "does not exist"),
        ("bad_threshold", "pred_iou_thresh=2.0 must lie in [0, 1]"),
    ],
)
def test_bad_input_gets_a_clear_error(case: str, message: str, photo_folder, vocab_file, tmp_path, base_args) -> None:
    images, vocab, out = str(photo_folder), str(vocab_file), str(tmp_path / "out.json")
    extra: list[str] = []
    if case == "missing_folder":
        images = str(tmp_path / "nowhere")
    elif case == "images_is_a_file":
        images = str(photo_folder / "camera.png")
    elif case == "no_images":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "readme.txt").write_text("no pictures")
        images = str(tmp_path / "docs")
    elif case in ("empty_vocab", "duplicate_vocab"):
        vocab = str(tmp_path / "v.txt")
        Path(vocab).write_text("# nothing\n" if case == "empty_vocab" else "cat\ndog\ncat\n")
    elif case == "missing_vocab":
        vocab = str(tmp_path / "missing.txt")
    elif case == "missing_sam_checkpoint":
        extra = ["--sam-checkpoint", str(tmp_path / "sam.pth")]
    elif case == "wrong_sam_architecture":
        extra = ["--sam-model", "vit_b"]
    elif case == "unwritable_output":
        out = str(tmp_path / "no" / "such" / "folder" / "out.json")
    elif case == "bad_threshold":
        extra = ["--pred-iou-thresh", "2.0"]
    code, _, stderr = run(["--images", images, "--vocab", vocab, "--out", out, *base_args, *extra])
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr


def test_help_explains_the_flags() -> None:
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(io.StringIO()) as stdout:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(stdout.getvalue().split())  # undo line wrapping
    for flag in [
        "--images",
        "--vocab",
        "--out",
        "--clip-model",
        "--pretrained",
        "--sam-model",
        "--sam-checkpoint",
        "--device",
        "--points-per-side",
        "--pred-iou-thresh",
        "--stability-score-thresh",
        "--box-nms-thresh",
        "--crop-n-layers",
        "--min-mask-region-area",
        "--min-score",
        "--restart",
    ]:
        assert flag in text
    assert "default: 0.88" in text and "default: 32" in text


def test_required_flags_are_enforced() -> None:
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()) as stderr:
        main(["--images", str(SKIMAGE_DATA)])
    assert exit_info.value.code == 2 and "--vocab" in stderr.getvalue()


def test_overlays(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args) -> None:
    overlays = tmp_path / "overlays"
    out = tmp_path / "out.json"
    argv = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), "--save-overlays"]
    assert run([*argv, str(overlays), *base_args])[0] == 0
    written = sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.jpg"))
    assert written == ["astronaut.jpg", "camera.jpg", "logo.jpg", "nested/chelsea.jpg"]
    from PIL import Image

    from gem_sam.images import load_image

    original = load_image(photo_folder / "astronaut.png")
    with Image.open(overlays / "astronaut.jpg") as overlay:
        assert overlay.size == (original.shape[1], original.shape[0])
        assert np.abs(np.asarray(overlay, dtype=float) - original).mean() > 5  # masks are drawn


@pytest.mark.parametrize(
    "flags,expected",
    [([], {}), (["--compile"], {"compile": True}), (["--no-compile"], {"compile": False})],
)
def test_switch_settings_parse_as_booleans(flags: list[str], expected: dict) -> None:
    from gem_sam.cli.args import generator_settings
    from gem_sam.cli.label import build_parser

    args = build_parser().parse_args(["--images", "x", "--vocab", "v.txt", *flags])
    assert generator_settings(args) == expected


def test_path_option_a_method_does_not_take(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args) -> None:
    out = tmp_path / "annotations.json"
    argv = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args]
    code, _, err = run([*argv, "--method", "maskclip", "--gem-depth", "3"])
    assert code == 2
    assert "--gem-depth: not an option of method 'maskclip'; maskclip takes --maskclip-variant" in err
    assert not out.exists() and not Path(f"{out}.records").exists()


@pytest.fixture
def sam_with_empty_masks(tmp_path: Path) -> Path:
    """The tiny SAM with its second mask token's hypernetwork zeroed: that token's mask logits are 0
    everywhere, so its masks are empty and have stability score 0."""
    sam = tiny_sam()
    last = sam.mask_decoder.output_hypernetworks_mlps[1].layers[-1]
    last.weight.data.zero_()
    last.bias.data.zero_()
    path = tmp_path / "sam_empty_masks.pth"
    torch.save(sam.state_dict(), path)
    return path


def test_empty_masks_never_reach_the_coco_file(
    tmp_path: Path, vocab_file: Path, base_args, sam_with_empty_masks: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    small_photo("coffee.png", long_side=120).save(folder / "coffee.png")
    settings = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    generator = build_mask_generator(
        model_type=TINY_SAM_NAME, checkpoint=str(sam_with_empty_masks), device="cpu", **settings
    )
    records = generator.generate(rgb_photo("coffee.png", long_side=120))
    assert any(record["area"] == 0 for record in records)  # the generator lets them through, as SAM's does

    out = tmp_path / "annotations.json"
    args = [*base_args, "--sam-checkpoint", str(sam_with_empty_masks), "--stability-score-thresh", "0"]
    code, _, _ = run(["--images", str(folder), "--vocab", str(vocab_file), "--out", str(out), *args])
    assert code == 0
    annotations = json.loads(out.read_text())["annotations"]
    assert annotations and all(annotation["area"] > 0 for annotation in annotations)
    assert len(annotations) == sum(record["area"] > 0 for record in records)


@pytest.mark.parametrize("kind", ["folder", "under a file"])
def test_out_is_checked_before_any_work(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args, kind) -> None:
    if kind == "folder":
        out, message = tmp_path / "results", "is a folder"
        out.mkdir()
    else:
        (tmp_path / "file.txt").write_text("x")
        out, message = tmp_path / "file.txt" / "annotations.json", "does not exist"
    code, _, err = run(["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args])
    assert code == 2 and message in err and str(out) in err
    assert not list(tmp_path.glob("**/*.records"))


def test_offline_pretrained_tag_is_one_error_line(photo_folder: Path, vocab_file: Path, tmp_path: Path) -> None:
    """As a user runs it: a fresh process, offline, with an empty weights cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    argv = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(tmp_path / "a.json")]
    argv += ["--clip-model", "ViT-B-16", "--pretrained", "openai", "--device", "cpu", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "gem_sam.label", *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: could not get the weights ViT-B-16 / openai")
    assert "--pretrained" in errors[0] and "Traceback" not in result.stderr


def test_quality_controls_and_run_report(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args) -> None:
    out = tmp_path / "annotations.json"
    controls = ["--max-masks-per-image", "2", "--dedupe-iou", "0.5", "--min-similarity", "-1"]
    code, stdout, _ = run(
        ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args, *controls]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["info"]["settings"]["labelling"] == {
        "min_score": 0.0,
        "min_similarity": -1.0,
        "dedupe_iou": 0.5,
        "max_masks_per_image": 2,
    }
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=len(data["images"]) + 1)[1:]
    assert per_image.max() == 2

    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["n_images"] == len(data["images"]) and report["n_masks"] == len(data["annotations"])
    by_class = np.bincount([a["category_id"] for a in data["annotations"]], minlength=4)[1:]
    assert [entry["masks"] for entry in report["classes"]] == by_class.tolist()
    assert report["masks_per_image"]["histogram"] == np.bincount(per_image).tolist()
    for entry in report["classes"]:
        scores = [a["score"] for a in data["annotations"] if a["category_id"] == entry["id"]]
        assert sum(entry["score_histogram"]) == len(scores)
        if scores:
            assert entry["score"]["median"] == pytest.approx(float(np.median(scores)))
    png = Path(f"{out}.report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_reuses_only_results_of_the_same_files(tmp_path: Path, vocab_file: Path, base_args) -> None:
    """Two shoots with the same file names into one --out: the second is refused, naming both folders,
    and nothing is written; a photo replaced in place is labelled again, the others resumed, and the
    file equals a fresh run's."""
    shoot1, shoot2 = tmp_path / "shoot1", tmp_path / "shoot2"
    shoot1.mkdir()
    shoot2.mkdir()
    small_photo("astronaut.png", long_side=64).convert("RGB").save(shoot1 / "IMG_0001.jpg")
    small_photo("coffee.png", long_side=64).convert("RGB").save(shoot1 / "IMG_0002.jpg")
    small_photo("chelsea.png", long_side=48).convert("RGB").save(shoot2 / "IMG_0001.jpg")
    out = tmp_path / "annotations.json"

    def label(folder: Path, target: Path = out) -> tuple[int, str, str]:
        return run(["--images", str(folder), "--vocab", str(vocab_file), "--out", str(target), *base_args])

    assert label(shoot1)[0] == 0
    first = out.read_bytes()
    code, stdout, stderr = label(shoot2)
    assert code == 2 and stdout == "" and str(shoot1.resolve()) in stderr and str(shoot2.resolve()) in stderr
    assert "--restart" in stderr and len(stderr.strip().splitlines()) == 1
    assert out.read_bytes() == first

    # the same name, another photo (another size): labelled again, never taken from the record
    small_photo("rocket.jpg", long_side=40).convert("RGB").save(shoot1 / "IMG_0002.jpg")
    code, stdout, _ = label(shoot1)
    assert code == 0 and "images labelled: 1 (plus 1 from an earlier run)" in stdout
    image = {entry["file_name"]: entry for entry in json.loads(out.read_text())["images"]}["IMG_0002.jpg"]
    assert (image["height"], image["width"]) == np.asarray(small_photo("rocket.jpg", long_side=40)).shape[:2]
    fresh = tmp_path / "fresh.json"
    assert label(shoot1, fresh)[0] == 0
    assert json.loads(out.read_text()) == json.loads(fresh.read_text())
    assert len(list(Path(f"{out}.records").glob("img-*.json"))) == 2  # the stale record is gone


def test_old_records_are_not_resumed(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args) -> None:
    out = tmp_path / "out.json"
    records = Path(f"{out}.records")
    records.mkdir()
    (records / "run.json").write_text(json.dumps({"vocabulary": ["cat"]}))  # a manifest of an older version
    code, _, stderr = run(["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args])
    assert code == 2 and "older gem_sam version" in stderr and "--restart" in stderr


def test_a_huge_vocabulary_never_fails_the_run_report(photo_folder: Path, tmp_path: Path, base_args) -> None:
    """2,500 classes: the report picture shows the classes with the most masks and says so; the run
    succeeds and its report JSON lists every class."""
    vocab = tmp_path / "big.txt"
    vocab.write_text("\n".join(f"class number {i}" for i in range(2500)) + "\n")
    out = tmp_path / "annotations.json"
    code, stdout, stderr = run(["--images", str(photo_folder), "--vocab", str(vocab), "--out", str(out), *base_args])
    assert code == 0, stderr
    assert "warning: the report picture shows the 60 classes with the most masks, of 2500" in stdout
    assert Path(f"{out}.report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads(Path(f"{out}.report.json").read_text())["classes"]) == 2500


GROUPED = "person: person, man, woman\ndog: dog, puppy\ncup\nbackground: sky, wall\n"
FLAT_PROMPTS = ["person", "man", "woman", "dog", "puppy", "cup", "sky", "wall"]
PROMPT_CLASS = {"person": "person", "man": "person", "woman": "person", "dog": "dog", "puppy": "dog", "cup": "cup"}


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_prompts_and_background_equal_the_flat_prompts_mapped_by_hand(
    photo_folder: Path, tmp_path: Path, base_args, fmt: str
) -> None:
    """Labelling with classes of several prompts and background prompts gives the masks and classes of
    labelling with the eight prompts as classes, each mask's prompt mapped to its class by hand and the
    background prompts' masks removed."""
    flat_vocab = tmp_path / "flat.txt"
    flat_vocab.write_text("\n".join(FLAT_PROMPTS) + "\n")
    grouped_vocab = tmp_path / f"grouped.{fmt}"
    if fmt == "txt":
        grouped_vocab.write_text(GROUPED)
    else:
        grouped_vocab.write_text(
            json.dumps({**{p: c for p, c in PROMPT_CLASS.items()}, "sky": "background", "wall": "background"})
        )
    flat_out, grouped_out = tmp_path / "flat_out.json", tmp_path / "grouped_out.json"  # not the vocabularies
    assert run(["--images", str(photo_folder), "--vocab", str(flat_vocab), "--out", str(flat_out), *base_args])[0] == 0
    code, stdout, _ = run(
        ["--images", str(photo_folder), "--vocab", str(grouped_vocab), "--out", str(grouped_out), *base_args]
    )
    assert code == 0

    flat, grouped = json.loads(flat_out.read_text()), json.loads(grouped_out.read_text())
    flat_names = {c["id"]: c["name"] for c in flat["categories"]}
    expected = [
        (a["image_id"], PROMPT_CLASS[flat_names[a["category_id"]]], a["segmentation"]["counts"])
        for a in flat["annotations"]
        if flat_names[a["category_id"]] in PROMPT_CLASS
    ]
    grouped_names = {c["id"]: c["name"] for c in grouped["categories"]}
    assert list(grouped_names.values()) == ["person", "dog", "cup"]  # file order, no background
    found = [
        (a["image_id"], grouped_names[a["category_id"]], a["segmentation"]["counts"]) for a in grouped["annotations"]
    ]
    assert found == expected
    # SAM's random-init masks are specks spread over the image, so one prompt wins them all here; the mix
    # of classes and background is checked on object-like masks in tests/labelling/test_vocabulary_runs.py
    dropped = len(flat["annotations"]) - len(expected)
    assert len(flat["annotations"]) > 0
    assert (f"masks won by background prompts (not written): {dropped}" in stdout) == (dropped > 0)
    report = json.loads(Path(f"{grouped_out}.report.json").read_text())
    by_prompt = {p: sum(flat_names[a["category_id"]] == p for a in flat["annotations"]) for p in ("sky", "wall")}
    assert report["dropped_as_background"] == {"masks": dropped, "by_prompt": by_prompt}
    assert grouped["info"]["dropped_as_background"] == by_prompt
    settings = grouped["info"]["settings"]
    assert settings["prompts"]["person"] == ["person", "man", "woman"] and settings["background"] == ["sky", "wall"]


def test_imagenet_templates_are_recorded(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args) -> None:
    out = tmp_path / "out.json"
    argv = ["--images", str(photo_folder), "--vocab", str(vocab_file), "--out", str(out), *base_args]
    assert run([*argv, "--templates", "imagenet"])[0] == 0
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert len(report["templates"]) == 80 and report["templates"][0] == "a bad photo of a {}."
    code, _, err = run([*argv, "--templates", "imagenet", "--template", "a {}.", "--restart"])
    assert code == 2 and "--template or --templates" in err


@pytest.mark.parametrize(
    "text,message",
    [
        ("cup\nmug: cup\n", "line 2: the prompt 'cup' of 'mug' is already a prompt of 'cup'"),
        ("cup\ndog:\n", "line 2: 'dog' has no prompt"),
        ("dog: dog\ndog: puppy\n", "line 2: class 'dog' is declared again"),
        ("background: sky\n", "line 1: 'background' is the only class"),
    ],
)
def test_bad_vocabulary_is_refused_before_any_model_loads(
    photo_folder: Path, tmp_path: Path, text: str, message: str
) -> None:
    vocab = tmp_path / "v.txt"
    vocab.write_text(text)
    missing = str(tmp_path / "no_such_checkpoint.pth")  # loading any model would fail with another error
    code, stdout, err = run(["--images", str(photo_folder), "--vocab", str(vocab), "--out", str(tmp_path / "o.json"),
                             "--sam-checkpoint", missing, "--pretrained", missing, "--quiet"])  # fmt: skip
    assert code == 2 and stdout == "" and message in err and str(vocab) in err
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.json.records").exists()


def test_max_masks_per_image_keeps_the_highest_scores(photo_folder: Path, vocab_file: Path, tmp_path: Path, base_args):
    """Per image, the capped run keeps exactly the two highest-scoring masks of the uncapped run."""
    argv = ["--images", str(photo_folder), "--vocab", str(vocab_file), *base_args]
    all_out, capped_out = tmp_path / "all.json", tmp_path / "capped.json"
    assert run([*argv, "--out", str(all_out)])[0] == 0
    assert run([*argv, "--out", str(capped_out), "--max-masks-per-image", "2"])[0] == 0
    every = json.loads(all_out.read_text())["annotations"]
    capped = json.loads(capped_out.read_text())["annotations"]
    for image_id in {a["image_id"] for a in every}:
        mine = [a for a in every if a["image_id"] == image_id]
        scores = sorted((a["score"] for a in mine), reverse=True)
        assert len(mine) > 2 and scores[1] > scores[2]  # a cap that has to choose, without a tie at the cut
        kept = sorted(a["score"] for a in capped if a["image_id"] == image_id)
        assert kept == sorted(scores[:2])
