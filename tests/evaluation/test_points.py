"""Evaluation on a small dataset in the official OpenImages V7 format, written by the test."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from gem_sam.cli.evaluate import main
from gem_sam.evaluation.engine import ModelSpec
from gem_sam.evaluation.points import evaluate_points
from gem_sam.run_store import RunMismatchError

from ..conftest import LOOSE_SETTINGS, TINY_CLIP_NAME, TINY_SAM, TINY_SAM_NAME, small_photo

POINTS = [  # ImageId, X, Y, Label, answer
    ("img_a", 0.2, 0.2, "/m/cat", "yes"),
    ("img_a", 0.8, 0.2, "/m/cat", "yes"),
    ("img_a", 0.1, 0.9, "/m/cat", "no"),
    ("img_a", 0.5, 0.9, "/m/dog", "no"),  # dog has no yes-point in img_a: not evaluated there
    ("img_b", 0.3, 0.1, "/m/dog", "yes"),
    ("img_b", 0.3, 0.7, "/m/dog", "yes"),
    ("img_b", 0.3, 0.2, "/m/dog", "unsure"),
    ("img_b", 0.1, 0.5, "/m/cat", "yes"),
    ("img_c", 0.9, 0.9, "/m/cat", "yes"),
    ("img_c", 0.6, 0.1, "/m/cat", "no"),
    ("img_missing", 0.5, 0.5, "/m/cat", "yes"),
]


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, str]:
    return write_dataset(tmp_path)


def write_dataset(tmp_path: Path) -> dict[str, str]:
    """Three small photos with OpenImages-style point labels of three classes, in ``tmp_path``."""
    images = tmp_path / "images"
    images.mkdir()
    for image_id, photo in [("img_a", "astronaut.png"), ("img_b", "coffee.png"), ("img_c", "chelsea.png")]:
        small_photo(photo, long_side=96).convert("RGB").save(images / f"{image_id}.jpg")
    points = tmp_path / "points.csv"
    rows = ["ImageId,Source,X,Y,Label,EstimatedYesNo,YesVotes,NoVotes,UnsureVotes,TextLabel"]
    rows += [f"{i},ih,{x},{y},{label},{answer},1,0,0," for i, x, y, label, answer in POINTS]
    points.write_text("\n".join(rows) + "\n")
    classes = tmp_path / "classes.csv"
    classes.write_text("LabelName,DisplayName\n/m/cat,Cat\n/m/dog,Dog\n/m/car,Car\n")
    return {"points": str(points), "classes": str(classes), "images": str(images)}


class FixedMaps:
    """Predicts 'cat' left of the middle (x < 0.5) and 'dog' in the top half (y < 0.5)."""

    def inside(self, image, class_names, x, y):
        rules = {"Cat": x < 0.5, "Dog": y < 0.5}
        return np.stack([rules[name] for name in class_names])


def test_metric_on_given_maps_by_hand(dataset) -> None:
    report = evaluate_points(
        FixedMaps(),
        points_csv=dataset["points"],
        classes_csv=dataset["classes"],
        images_dir=dataset["images"],
        progress=False,
    )
    # cat: img_a (TP 1, FP 1, FN 1), img_b (1, 0, 0), img_c (0, 0, 1) -> 2 / 5; dog: img_b (1, 0, 1) -> 1 / 2
    assert report["p_miou"] == pytest.approx(100 * (0.4 + 0.5) / 2)
    assert report["p_miou_per_pair"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 + 0) / 4)
    assert (report["n_images"], report["n_classes"], report["n_pairs"]) == (3, 2, 4)
    assert report["missing_images"] == ["img_missing"]


def test_limit_and_image_ids(dataset, tmp_path) -> None:
    report = evaluate_points(FixedMaps(), **_paths(dataset), image_ids=["img_b"], progress=False)
    assert report["n_images"] == 1 and report["p_miou"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    limited = evaluate_points(FixedMaps(), **_paths(dataset), limit=2, seed=1, progress=False)
    assert limited["n_selected"] == 2
    with pytest.raises(ValueError, match="not in"):
        evaluate_points(FixedMaps(), **_paths(dataset), image_ids=["nope"], progress=False)


def _paths(dataset):
    return {"points_csv": dataset["points"], "classes_csv": dataset["classes"], "images_dir": dataset["images"]}


def _argv(dataset, out, models, method, *extra):
    tiny_clip_checkpoint, tiny_sam_checkpoint = models
    return [
        "--points", dataset["points"], "--classes", dataset["classes"], "--images", dataset["images"],
        "--method", method, "--out", str(out), "--quiet", "--device", "cpu",
        "--clip-model", TINY_CLIP_NAME, "--pretrained", str(tiny_clip_checkpoint),
        "--sam-model", TINY_SAM_NAME, "--sam-checkpoint", str(tiny_sam_checkpoint), "--points-per-side", "3",
        "--pred-iou-thresh", str(LOOSE_SETTINGS["pred_iou_thresh"]),
        "--stability-score-thresh", str(LOOSE_SETTINGS["stability_score_thresh"]),
        *extra,
    ]  # fmt: skip


@pytest.fixture
def models(tiny_clip_checkpoint, tiny_sam_checkpoint):
    return tiny_clip_checkpoint, tiny_sam_checkpoint


@pytest.mark.parametrize("method", ["gem", "gem-sam", "clip", "maskclip", "clipsurgery"])
def test_every_method_end_to_end(method, dataset, tmp_path, models) -> None:
    out = tmp_path / "report.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(_argv(dataset, out, models, method)) == 0
    report = json.loads(out.read_text())
    for key in (
        "p_miou",
        "p_miou_per_pair",
        "n_images",
        "n_classes",
        "fps",
        "fps_model",
        "method",
        "model",
        "settings",
    ):
        assert key in report
    assert report["method"] == method and report["n_images"] == 3 and report["n_classes"] == 2
    assert 0.0 <= report["p_miou"] <= 100.0 and report["fps"] > 0
    assert ("sam_refinement" in report["settings"]) == (method == "gem-sam")
    table = stdout.getvalue()
    assert f"| {method} ({report['method_variant']}) |" in table and "paper fps (A6000)" in table


@pytest.mark.parametrize(
    "method,extra,variant_words,path_settings",
    [
        ("maskclip", [], "maskclip (official)", {"maskclip_variant": "official"}),
        ("maskclip", ["--maskclip-variant", "surgery"], "CLIP Surgery variant", {"maskclip_variant": "surgery"}),
        ("clipsurgery", [], "with feature surgery", {"feature_surgery": True, "depth": 6}),
        ("clipsurgery", ["--no-feature-surgery"], "no feature surgery", {"feature_surgery": False}),
        ("gem-sam", [], "gem-sam rule label", {"depth": 4}),
        ("gem-sam", ["--sam-rule", "mean", "--sam-overlap", "smallest"], "gem-sam rule mean", {}),
    ],
)
def test_report_says_which_variant_ran(dataset, tmp_path, models, method, extra, variant_words, path_settings) -> None:
    out = tmp_path / "report.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(_argv(dataset, out, models, method, *extra)) == 0
    report = json.loads(out.read_text())
    assert variant_words in report["method_variant"] and "prompt 'a photo of a {}.'" in report["method_variant"]
    path = report["settings"]["scorer"]["path"]
    assert {key: path[key] for key in path_settings} == path_settings
    if method == "gem-sam":
        expected = {"rule": "label"} if not extra else {"rule": "mean", "overlap": "smallest", "uncovered": "map"}
        assert report["settings"]["sam_refinement"] == expected


@pytest.mark.parametrize(
    "method,extra,message",
    [
        ("maskclip", ["--gem-depth", "3"], "--gem-depth: not an option of method 'maskclip'"),
        ("clip", ["--gem-depth", "3"], "--gem-depth: not an option of method 'clip'"),
        ("clip", ["--gem-iterations", "2"], "--gem-iterations: not an option of method 'clip'"),
        ("gem", ["--maskclip-variant", "surgery"], "--maskclip-variant: not an option of method 'gem'"),
        ("gem-sam", ["--feature-surgery"], ": not an option of method 'gem'"),
    ],
)
def test_path_options_a_method_does_not_take(dataset, tmp_path, models, method, extra, message) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(_argv(dataset, tmp_path / "r.json", models, method, *extra))
    assert code == 2 and message in err.getvalue()
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "method,extra,message",
    [
        ("gem-sam", ["--sam-overlap", "smallest"], "--sam-overlap: only used by --sam-rule mean, not label"),
        ("gem", ["--sam-rule", "mean"], "--sam-rule: only used by --method gem-sam, not gem"),
    ],
)
def test_sam_rule_options_that_have_no_effect(dataset, tmp_path, models, method, extra, message) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(_argv(dataset, tmp_path / "r.json", models, method, *extra))
    assert exit_info.value.code == 2 and message in err.getvalue()


def test_bad_data_paths(dataset, tmp_path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--points", str(tmp_path / "none.csv"), "--classes", dataset["classes"],
                     "--images", dataset["images"], "--pretrained", "x.pt", "--quiet"])  # fmt: skip
    assert code == 2 and "none.csv" in err.getvalue() and "does not exist" in err.getvalue()


class StopAt:
    """A predictor that stops the run (as a kill would) on its ``stop_at``-th image."""

    def __init__(self, predictor, stop_at: int) -> None:
        self.predictor, self.stop_at, self.calls = predictor, stop_at, 0

    def inside(self, *args):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.predictor.inside(*args)


POINT_METRIC_KEYS = ("p_miou", "p_miou_per_pair", "n_images", "n_classes", "n_pairs", "missing_images")


def test_interrupted_evaluation_resumes_to_the_same_report(dataset, tmp_path) -> None:
    whole = evaluate_points(FixedMaps(), **_paths(dataset), progress=False, out_path=tmp_path / "a.json")
    with pytest.raises(KeyboardInterrupt):
        evaluate_points(StopAt(FixedMaps(), 2), **_paths(dataset), progress=False, out_path=tmp_path / "b.json")
    resuming = StopAt(FixedMaps(), 0)
    resumed = evaluate_points(resuming, **_paths(dataset), progress=False, out_path=tmp_path / "b.json")
    assert resuming.calls == 2  # the interrupted image and the one after it; the first was kept
    assert {k: resumed[k] for k in POINT_METRIC_KEYS} == {k: whole[k] for k in POINT_METRIC_KEYS}
    with pytest.raises(RunMismatchError, match="settings"):  # other settings are refused, not mixed
        evaluate_points(FixedMaps(), **_paths(dataset), progress=False, out_path=tmp_path / "b.json", limit=1)


@pytest.mark.slow
def test_ray_with_two_workers_gives_the_same_report(dataset, tmp_path, models) -> None:
    pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install gem_sam[ray]")
    tiny_clip_checkpoint, tiny_sam_checkpoint = models
    model = ModelSpec(
        clip_model=TINY_CLIP_NAME,
        pretrained=str(tiny_clip_checkpoint),
        sam_model=TINY_SAM_NAME,
        sam_checkpoint=str(tiny_sam_checkpoint),
        generator_settings={"points_per_side": 3, **LOOSE_SETTINGS},
        device="cpu",
        clip_config_paths=(str(tiny_clip_checkpoint.parent / "configs"),),
        sam_architectures={TINY_SAM_NAME: TINY_SAM},
    )
    single = evaluate_points(model=model, method="gem-sam", **_paths(dataset), progress=False)
    on_ray = evaluate_points(
        model=model,
        method="gem-sam",
        **_paths(dataset),
        progress=False,
        out_path=tmp_path / "r.json",
        use_ray=True,
        workers=2,
    )
    assert {k: on_ray[k] for k in POINT_METRIC_KEYS} == {k: single[k] for k in POINT_METRIC_KEYS}
    assert single["n_images"] == 3
