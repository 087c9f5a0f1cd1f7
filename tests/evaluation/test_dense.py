"""Dense evaluation: the metric by hand, the protocol recomputed independently, mini sets in each
dataset's real layout (real photos, hand-drawn label maps), resume and Ray."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from gem_sam.cli.evaluate_dense import main
from gem_sam.evaluation.confusion import (
    IGNORE,
    NO_PREDICTION,
    confusion_matrix,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)
from gem_sam.evaluation.dense import DenseEvalTask, evaluate_dense
from gem_sam.evaluation.dense_datasets import VOC_CLASSES, load_dense_dataset
from gem_sam.evaluation.dense_predictor import DensePredictor, SlidingWindow, classes_from_similarity, window_starts
from gem_sam.evaluation.engine import ModelSpec
from gem_sam.export.semantic import palette
from gem_sam.naming.scorer import build_gem_scorer

from ..conftest import TINY_CLIP_NAME, small_photo

PHOTOS = {"img_a": "astronaut.png", "img_b": "coffee.png", "img_c": "chelsea.png"}


@pytest.mark.parametrize(
    "labels,predictions,n_classes,expected",
    [
        # 2 classes; pixel (0,1) ignored; one miss (no prediction) of class 1
        ([[0, IGNORE, 1, 1]], [[0, 1, 1, NO_PREDICTION]], 2, [[1, 0, 0], [0, 1, 1]]),
        ([[2, 2], [0, 1]], [[2, 0], [1, 1]], 3, [[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]]),
        ([[IGNORE]], [[0]], 2, [[0, 0, 0], [0, 0, 0]]),
    ],
)
def test_confusion_matrix_by_hand(labels, predictions, n_classes, expected) -> None:
    got = confusion_matrix(np.array(labels), np.array(predictions), n_classes)
    np.testing.assert_array_equal(got, np.array(expected))


def test_iou_by_hand() -> None:
    # true rows, predicted columns (+ no prediction): class 0: TP 3, FN 1 (as 1), FP 2 (from 1) -> 3 / 6
    # class 1: TP 4, FN 2 + 1 (as 3) + 1 miss, FP 1 -> 4 / 9; class 2 absent and never predicted -> NaN;
    # class 3 absent but predicted once -> 0
    matrix = np.array([[3, 1, 0, 0, 0], [2, 4, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    ious = per_class_iou(matrix)
    np.testing.assert_allclose(ious[[0, 1, 3]], [3 / 6, 4 / (4 + 4 + 1), 0.0])
    assert np.isnan(ious[2])
    assert mean_iou(matrix) == pytest.approx((3 / 6 + 4 / 9 + 0.0) / 3)
    assert pixel_accuracy(matrix) == pytest.approx(7 / 12)


@pytest.mark.parametrize(
    "length,window,stride,expected",
    [
        (448, 448, 224, [0]),
        (300, 448, 224, [0]),
        (672, 448, 224, [0, 224]),
        (600, 448, 224, [0, 152]),
        (1000, 448, 224, [0, 224, 448, 552]),
        (1000, 448, 448, [0, 448, 552]),
    ],
)
def test_window_starts(length, window, stride, expected) -> None:
    assert window_starts(length, window=window, stride=stride) == expected


def test_background_rule_by_hand() -> None:
    # two classes; pixel 0: similarities 0.30 / 0.20 -> softmax(100 x) = 0.99995 -> class 1 (index 0 + 1);
    # pixel 1: 0.25 / 0.24 -> 0.731 < 0.85 -> background 0
    similarity = torch.tensor([[0.30, 0.25], [0.20, 0.24]])
    assert classes_from_similarity(similarity, logit_scale=100, background_threshold=0.85).tolist() == [1, 0]
    assert classes_from_similarity(similarity, logit_scale=100, background_threshold=None).tolist() == [0, 0]


def _label_map(size_wh: tuple[int, int], shapes: list[tuple[str, tuple, int]], *, fill: int) -> Image.Image:
    """A hand-drawn label map: ("rect" | "ellipse", box, value) shapes over ``fill``."""
    image = Image.new("L", size_wh, fill)
    draw = ImageDraw.Draw(image)
    for kind, box, value in shapes:
        (draw.rectangle if kind == "rect" else draw.ellipse)(box, fill=value)
    return image


def write_mini_set(root: Path, dataset: str) -> Path:
    """Three real photos with hand-drawn labels in the dataset's released layout."""
    for index, (item_id, photo) in enumerate(PHOTOS.items()):
        image = small_photo(photo, long_side=96).convert("RGB")
        w, h = image.size
        if dataset == "voc":
            labels = _label_map(
                (w, h), [("ellipse", (w // 4, h // 4, w - 10, h - 5), 15), ("rect", (0, 0, 20, 12), 8)], fill=0
            )
            labels.paste(IGNORE, (0, h - 3, w, h))  # a strip of void pixels
            paletted = labels.convert("P")
            paletted.putpalette(palette())
            folders = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
            _save(root, folders, item_id, image, paletted)
        elif dataset == "context":
            labels = _label_map(
                (w, h), [("rect", (10, 10, w // 2, h - 10), 37), ("ellipse", (w // 2, 0, w, h // 2), 47)], fill=index
            )
            _save(
                root,
                ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"),
                item_id,
                image,
                labels,
            )
        else:
            labels = _label_map(
                (w, h), [("rect", (5, 5, w - 5, h // 3), 3), ("rect", (0, h // 2, w, h), 13 + index)], fill=0
            )
            (root / "images" / "validation").mkdir(parents=True, exist_ok=True)
            (root / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
            image.save(root / "images" / "validation" / f"ADE_val_{item_id}.jpg")
            labels.save(root / "annotations" / "validation" / f"ADE_val_{item_id}.png")
    return root


def _save(root: Path, folders: tuple[str, str, str], item_id: str, image: Image.Image, labels: Image.Image) -> None:
    images, annotations, split = (root / folder for folder in folders)
    for folder in (images, annotations, split):
        folder.mkdir(parents=True, exist_ok=True)
    image.save(images / f"{item_id}.jpg", quality=95)
    labels.save(annotations / f"{item_id}.png")
    with open(split / "val.txt", "a") as listing:
        listing.write(f"{item_id}\n")


@pytest.fixture(scope="module")
def scorer(clip_scale_100_checkpoint: Path):
    """The tiny CLIP at a trained CLIP's logit scale, so that VOC pixels reach the 0.85 threshold."""
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(clip_scale_100_checkpoint), device="cpu")
    assert scorer.logit_scale == pytest.approx(100.0)
    return scorer


def _independent_prediction(scorer, image_rgb, class_names, size_hw, *, background_threshold):
    """The documented protocol written out: 448-short-side input, 448 windows every 224 pixels
    (last one at the edge), bilinear per window, mean over windows, bilinear to the labels, argmax
    (+ background below 0.85 softmax probability)."""
    images = scorer.preprocess(image_rgb)
    text = scorer.encode_text(class_names)
    _, _, height, width = images.shape
    total = torch.zeros(len(class_names), height, width)
    count = torch.zeros(height, width)
    tops = sorted({min(t, max(height - 448, 0)) for t in range(0, max(height - 448, 0) + 224, 224)})
    lefts = sorted({min(s, max(width - 448, 0)) for s in range(0, max(width - 448, 0) + 224, 224)})
    for top in tops:
        for left in lefts:
            crop = images[:, :, top : top + 448, left : left + 448]
            sims = scorer.patch_similarity(crop, text)
            total[:, top : top + crop.shape[2], left : left + crop.shape[3]] += F.interpolate(
                sims, size=crop.shape[2:], mode="bilinear", align_corners=False
            )[0]
            count[top : top + crop.shape[2], left : left + crop.shape[3]] += 1
    full = F.interpolate((total / count)[None], size=size_hw, mode="bilinear", align_corners=False)[0]
    best = full.argmax(dim=0).numpy()
    if background_threshold is None:
        return best
    probability = torch.softmax(full * scorer.logit_scale, dim=0).max(dim=0).values.numpy()
    return np.where(probability < background_threshold, 0, best + 1)


@pytest.mark.parametrize("dataset_name", ["voc", "context", "ade20k"])
def test_predictions_follow_the_documented_protocol(scorer, tmp_path: Path, dataset_name: str) -> None:
    dataset = load_dense_dataset(dataset_name, write_mini_set(tmp_path / dataset_name, dataset_name))
    threshold = 0.85 if dataset.has_background else None
    predictor = DensePredictor(scorer=scorer, vocabulary=dataset.class_names, background_threshold=threshold)
    for item in dataset.items:
        image = np.asarray(Image.open(item.image).convert("RGB"))
        labels = dataset.read_labels(item)
        expected = _independent_prediction(
            scorer, image, dataset.class_names, labels.shape, background_threshold=threshold
        )
        np.testing.assert_array_equal(predictor.predict(image, labels.shape), expected)
        # not degenerate: several classes, and for VOC both background and shifted object classes
        assert len(np.unique(expected)) >= 3
        if threshold is not None:
            assert 0 < (expected == 0).mean() < 1
    # coffee (64x96) is 448x672 at the model: two windows wide
    assert scorer.preprocess(np.zeros((64, 96, 3), np.uint8)).shape[-2:] == (448, 672)


@pytest.mark.parametrize("dataset_name", ["voc", "context", "ade20k"])
def test_cli_end_to_end(clip_scale_100_checkpoint: Path, tmp_path: Path, scorer, dataset_name: str) -> None:
    root = write_mini_set(tmp_path / dataset_name, dataset_name)
    out = tmp_path / "report.json"
    clip = str(clip_scale_100_checkpoint)
    argv = ["--dataset", dataset_name, "--root", str(root), "--method", "gem", "--out", str(out), "--quiet",
            "--clip-model", TINY_CLIP_NAME, "--pretrained", clip, "--device", "cpu"]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    report = json.loads(out.read_text())
    dataset = load_dense_dataset(dataset_name, root)
    assert report["n_images"] == 3 and report["dataset"] == dataset_name
    assert len(report["per_class_iou"]) == dataset.n_classes
    # the report's mIoU, recomputed here from the predictions and labels with plain numpy
    threshold = 0.85 if dataset.has_background else None
    predictor = DensePredictor(scorer=scorer, vocabulary=dataset.class_names, background_threshold=threshold)
    tp = np.zeros(dataset.n_classes)
    fp = np.zeros(dataset.n_classes)
    fn = np.zeros(dataset.n_classes)
    for item in dataset.items:
        labels = dataset.read_labels(item)
        predictions = predictor.predict(np.asarray(Image.open(item.image).convert("RGB")), labels.shape)
        valid = labels != IGNORE
        for c in range(dataset.n_classes):
            tp[c] += np.sum((labels == c) & (predictions == c) & valid)
            fp[c] += np.sum((labels != c) & (predictions == c) & valid)
            fn[c] += np.sum((labels == c) & (predictions != c) & valid)
    union = tp + fp + fn
    expected = 100 * np.mean(tp[union > 0] / union[union > 0])
    assert report["miou"] == pytest.approx(expected)
    assert report["seconds_per_image"]["model"] > 0 and report["seconds_per_image"]["metric"] >= 0
    assert f"| {dataset_name} | gem (" in stdout.getvalue()


@pytest.mark.parametrize(
    "dataset_name,remove,message",
    [
        ("voc", "JPEGImages", "folder '.*JPEGImages' is missing"),
        ("voc", "ImageSets/Segmentation/val.txt", "split file '.*val.txt' is missing"),
        ("context", "SegmentationClassContext", "SegmentationClassContext' is missing"),
        ("ade20k", "annotations/validation", "annotations/validation' is missing"),
    ],
)
def test_bad_layouts_name_what_is_missing(tmp_path: Path, dataset_name: str, remove: str, message: str) -> None:
    root = write_mini_set(tmp_path / dataset_name, dataset_name)
    target = root / remove
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(FileNotFoundError, match=message):
        load_dense_dataset(dataset_name, root)


def test_class_names_file_must_match(tmp_path: Path) -> None:
    root = write_mini_set(tmp_path / "voc", "voc")
    with pytest.raises(ValueError, match="gives 2 names; voc needs 20"):
        load_dense_dataset("voc", root, class_names=("cat", "dog"))
    renamed = load_dense_dataset("voc", root, class_names=tuple(f"thing {i}" for i in range(20)))
    assert renamed.class_names[0] == "thing 0" and VOC_CLASSES[0] == "aeroplane"


def test_missing_and_unreadable_files_are_counted(scorer, tmp_path: Path) -> None:
    root = write_mini_set(tmp_path / "voc", "voc")
    (root / "JPEGImages" / "img_b.jpg").unlink()
    (root / "SegmentationClass" / "img_c.png").write_bytes(b"not a png")
    dataset = load_dense_dataset("voc", root)
    predictor = DensePredictor(scorer=scorer, vocabulary=dataset.class_names, background_threshold=0.85)
    task = DenseEvalTask(dataset="voc", root=str(root), slide=SlidingWindow(), predictor=predictor)
    report = evaluate_dense(task, progress=False)
    assert report["n_images"] == 1
    assert [entry["image_id"] for entry in report["missing"]] == ["img_b"]
    assert [entry["image_id"] for entry in report["unreadable"]] == ["img_c"]


class Interrupting:
    """A predictor that stops the run (as a kill would) when it reaches ``stop_at``."""

    def __init__(self, predictor, stop_at: int) -> None:
        self.predictor, self.stop_at, self.calls = predictor, stop_at, 0

    def predict(self, image, size_hw):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.predictor.predict(image, size_hw)


METRIC_KEYS = ("miou", "per_class_iou", "pixel_accuracy", "n_images", "missing", "unreadable")


def test_interrupted_run_resumes_to_the_same_report(scorer, tmp_path: Path) -> None:
    root = write_mini_set(tmp_path / "ade", "ade20k")
    dataset = load_dense_dataset("ade20k", root)
    predictor = DensePredictor(scorer=scorer, vocabulary=dataset.class_names, background_threshold=None)
    task = DenseEvalTask(dataset="ade20k", root=str(root), slide=SlidingWindow(), predictor=predictor)
    whole = evaluate_dense(task, progress=False, out_path=tmp_path / "whole.json", settings={"s": 1})

    interrupted = task.__class__(**{**task.__dict__, "predictor": Interrupting(predictor, stop_at=3)})
    with pytest.raises(KeyboardInterrupt):
        evaluate_dense(interrupted, progress=False, out_path=tmp_path / "resumed.json", settings={"s": 1})
    assert len(list((tmp_path / "resumed.json.records").glob("img-*.json"))) == 2
    counting = Interrupting(predictor, stop_at=0)
    resumed_task = task.__class__(**{**task.__dict__, "predictor": counting})
    resumed = evaluate_dense(resumed_task, progress=False, out_path=tmp_path / "resumed.json", settings={"s": 1})
    assert counting.calls == 1  # only the image the interruption lost
    assert {key: resumed[key] for key in METRIC_KEYS} == {key: whole[key] for key in METRIC_KEYS}


@pytest.mark.slow
def test_ray_with_two_workers_gives_the_same_report(scorer, clip_scale_100_checkpoint: Path, tmp_path: Path) -> None:
    tiny_clip_checkpoint = clip_scale_100_checkpoint  # the scorer's weights
    pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install gem_sam[ray]")
    root = write_mini_set(tmp_path / "context", "context")
    model = ModelSpec(
        clip_model=TINY_CLIP_NAME,
        pretrained=str(tiny_clip_checkpoint),
        device="cpu",
        clip_config_paths=(str(tiny_clip_checkpoint.parent / "configs"),),
    )
    task = DenseEvalTask(dataset="context", root=str(root), slide=SlidingWindow(), model=model)
    single = evaluate_dense(task, progress=False)
    on_ray = evaluate_dense(task, progress=False, out_path=tmp_path / "ray.json", use_ray=True, workers=2)
    assert {key: on_ray[key] for key in METRIC_KEYS} == {key: single[key] for key in METRIC_KEYS}


def test_reports_record_the_window_and_stride_that_ran(tiny_clip_checkpoint: Path, tmp_path: Path) -> None:
    """--window 100 --stride 50 run as 96 and 48 on the 16-pixel patch grid; the report says so, and
    the paper's number is not printed beside the tiny model."""
    root = write_mini_set(tmp_path / "ade", "ade20k")
    out = tmp_path / "report.json"
    argv = ["--dataset", "ade20k", "--root", str(root), "--out", str(out), "--quiet", "--window", "100",
            "--stride", "50", "--clip-model", TINY_CLIP_NAME, "--pretrained", str(tiny_clip_checkpoint),
            "--device", "cpu"]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    report = json.loads(out.read_text())
    protocol = report["settings"]["protocol"]
    assert (protocol["window"], protocol["stride"]) == (96, 48)
    assert report["differs_from_paper"][0].startswith(f"model {TINY_CLIP_NAME}")
    row = stdout.getvalue().splitlines()[2]
    assert row.rstrip().endswith("| - |") and "no paper number: the settings differ" in stdout.getvalue()


@pytest.mark.parametrize(
    "method,model,pretrained,options,slide,class_names,differences",
    [
        ("gem", "ViT-B-16", "openai", {}, SlidingWindow(), False, []),
        ("gem", "ViT-B-16-quickgelu", "metaclip_400m", {}, SlidingWindow(), False, []),
        ("maskclip", "ViT-B-16", "openai", {"maskclip_variant": "surgery"}, SlidingWindow(), False, []),
        ("clipsurgery", "ViT-B-16", "openai", {}, SlidingWindow(), False, []),
        ("clip", "ViT-B-16", "openai", {}, SlidingWindow(), False, []),
        ("gem", "ViT-L-14", "openai", {}, SlidingWindow(), False, ["model ViT-L-14 openai"]),
        ("gem", "ViT-B-16", "openai", {"depth": 6}, SlidingWindow(), False, ["depth 6"]),
        ("gem", "ViT-B-16", "openai", {"templates": ("a {}.",)}, SlidingWindow(), False, ["templates ('a {}.',)"]),
        ("maskclip", "ViT-B-16", "openai", {}, SlidingWindow(), False, ["maskclip_variant 'official'"]),
        ("gem", "ViT-B-16", "openai", {}, SlidingWindow(window=224, stride=112), False, ["window 224 stride 112"]),
        ("gem", "ViT-B-16", "openai", {}, SlidingWindow(), True, ["--class-names"]),
        ("gem-sam", "ViT-B-16", "openai", {}, SlidingWindow(), False, ["method gem-sam"]),
    ],
)
def test_paper_number_only_in_the_papers_setting(
    method, model, pretrained, options, slide, class_names, differences
) -> None:
    from gem_sam.evaluation.dense import differences_from_paper
    from gem_sam.naming.scorer import scorer_config

    config = scorer_config(method="gem" if method == "gem-sam" else method, **options)
    found = differences_from_paper(
        method=method, clip_model=model, pretrained=pretrained, config=config, slide=slide, class_names=class_names
    )
    assert found == differences


def test_class_names_with_several_prompts_and_background(scorer, tmp_path: Path) -> None:
    """A dense class with two prompts is the pixel-wise maximum of the two prompts' maps; a background
    prompt that wins a pixel makes it background (VOC) or no prediction (others)."""
    from gem_sam.naming.vocabulary import Vocabulary

    image = np.asarray(small_photo("coffee.png", long_side=96).convert("RGB"))
    size_hw = image.shape[:2]
    prompts = ("cup", "mug", "table", "sky")
    single = DensePredictor(scorer=scorer, vocabulary=prompts, background_threshold=None).similarity(image, size_hw)
    grouped_vocabulary = Vocabulary(classes=("cup", "table"), prompts=(("cup", "mug"), ("table",)), background=("sky",))
    grouped = DensePredictor(scorer=scorer, vocabulary=grouped_vocabulary, background_threshold=None)
    similarity = grouped.similarity(image, size_hw)
    torch.testing.assert_close(similarity[0], torch.maximum(single[0], single[1]))
    torch.testing.assert_close(similarity[1:], single[2:])
    predictions = grouped.predict(image, size_hw)
    by_hand = similarity.argmax(dim=0).numpy()
    assert set(np.unique(by_hand)) == {0, 1, 2}  # both classes and the background win pixels
    np.testing.assert_array_equal(predictions, np.where(by_hand == 2, NO_PREDICTION, by_hand))
    voc_like = DensePredictor(scorer=scorer, vocabulary=grouped_vocabulary, background_threshold=0.0)
    np.testing.assert_array_equal(voc_like.predict(image, size_hw), np.where(by_hand == 2, 0, by_hand + 1))


class HandMasks:
    """A mask generator that proposes given masks (``generate`` as GridMaskGenerator's)."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        from gem_sam.mask_ops import encode_rle

        self.records = [{"segmentation": encode_rle(m), "area": int(m.sum())} for m in masks]

    def generate(self, image_rgb: np.ndarray) -> list[dict]:
        return self.records


@pytest.mark.parametrize("threshold", [None, 0.85])
def test_gem_sam_paints_the_smallest_mask_and_leaves_uncovered_pixels(scorer, threshold) -> None:
    """The dense gem-sam rule, worked out with a painter's algorithm: masks painted from the largest to
    the smallest with the class of their mean similarity; pixels no mask covers predict nothing
    (background for VOC)."""
    image = np.asarray(small_photo("astronaut.png", long_side=64).convert("RGB"))
    size_hw = image.shape[:2]
    names = ("person", "cup", "rocket", "plant", "sky")
    plain = DensePredictor(scorer=scorer, vocabulary=names, background_threshold=threshold)
    similarity = plain.similarity(image, size_hw)  # [C, H, W]

    def mask_class(mask: np.ndarray) -> int:
        means = similarity[:, torch.from_numpy(mask)].mean(dim=1)  # [C]
        best = int(means.argmax())
        if threshold is None:
            return best
        return 0 if float((means * scorer.logit_scale).softmax(dim=0).max()) < threshold else best + 1

    masks = [np.zeros(size_hw, dtype=bool) for _ in range(3)]
    masks[0][0:40, 0:40] = True  # 1600 px
    masks[1][20:60, 20:50] = True  # 1200 px, overlaps the first
    # a 3x3 mask inside the overlap of the two, where the map names something else than the large masks
    for top, left in ((r, c) for r in range(20, 37) for c in range(20, 37)):
        small = np.zeros(size_hw, dtype=bool)
        small[top : top + 3, left : left + 3] = True
        if mask_class(small) not in (mask_class(masks[0]), mask_class(masks[1])):
            masks[2] = small
            break
    assert masks[2].any(), "no spot of another class inside the overlap"
    expected = np.full(size_hw, 0 if threshold is not None else NO_PREDICTION, dtype=np.int64)
    classes = []
    for mask in sorted(masks, key=lambda m: -int(m.sum())):
        classes.append(mask_class(mask))
        expected[mask] = classes[-1]
    with_sam = DensePredictor(
        scorer=scorer, vocabulary=names, background_threshold=threshold, mask_generator=HandMasks(masks)
    )
    np.testing.assert_array_equal(with_sam.predict(image, size_hw), expected)
    assert (expected == (0 if threshold is not None else NO_PREDICTION)).any()  # uncovered pixels exist
    assert len(set(classes)) >= 2, classes  # the masks' classes differ, so the painting order matters
