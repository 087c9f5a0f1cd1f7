"""Exports of a real run, read back by the clients' own loaders: Ultralytics, torchvision,
pycocotools. The run names object-like masks on real photos (see ``region_masks``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from gem_sam import AutoLabeller, build_gem_scorer, label_folder
from gem_sam.cli.export import main
from gem_sam.export import fiftyone_samples, read_run_output
from gem_sam.export.coco_polygons import export_coco_polygons
from gem_sam.export.semantic import export_semantic, label_map, palette
from gem_sam.export.source import RunOutput
from gem_sam.labelling.report import RunReport, save_report_png
from gem_sam.mask_ops import decode_rle, encode_rle

from ..conftest import TINY_CLIP_NAME, small_photo
from ..region_masks import RegionMaskGenerator

VOCABULARY = ["person", "cup", "coin"]


@pytest.fixture(scope="module")
def run_output(tiny_clip_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelling run over three real photos (one in a sub-folder, one grey); returns its COCO file."""
    folder = tmp_path_factory.mktemp("run")
    images = folder / "images"
    (images / "nested").mkdir(parents=True)
    small_photo("astronaut.png").save(images / "astronaut.png")
    small_photo("coffee.png").convert("RGB").save(images / "nested" / "coffee.jpg")
    small_photo("coins.png").save(images / "coins.png")
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint), device="cpu")
    labeller = AutoLabeller(scorer=scorer, mask_generator=RegionMaskGenerator(), vocabulary=VOCABULARY)
    out = folder / "annotations.json"
    label_folder(labeller, images_dir=images, out_path=out, settings={"test": True}, progress=False)
    return out


def export(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def our_masks(coco_path: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """file name -> [(category id, mask)] in file order."""
    data = json.loads(coco_path.read_text())
    names = {image["id"]: image["file_name"] for image in data["images"]}
    out: dict[str, list[tuple[int, np.ndarray]]] = {name: [] for name in names.values()}
    for annotation in data["annotations"]:
        out[names[annotation["image_id"]]].append((annotation["category_id"], decode_rle(annotation["segmentation"])))
    return out


def test_run_has_object_like_masks(run_output: Path) -> None:
    masks = our_masks(run_output)
    assert sum(len(entries) for entries in masks.values()) >= 20
    # at least one instance in two pieces, and overlapping instances
    assert any(
        cv2.connectedComponents(m.astype(np.uint8))[0] - 1 >= 2 for entries in masks.values() for _, m in entries
    )


def test_bbox_is_cocos_extent_of_the_mask(run_output: Path) -> None:
    for annotation in json.loads(run_output.read_text())["annotations"]:
        rle = {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
        assert annotation["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]


# Ultralytics patches PIL's Image.open when imported, so its loader runs in a process of its own.
ULTRALYTICS_READER = """
import json, sys
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset

data = check_det_dataset(sys.argv[1])
dataset = YOLODataset(img_path=data["train"], data=data, task="segment", augment=False, imgsz=160)
print(json.dumps({
    "names": {str(k): v for k, v in data["names"].items()},
    "labels": [
        {"im_file": label["im_file"], "shape": list(label["shape"]), "cls": label["cls"][:, 0].tolist(),
         "segments": [segment.tolist() for segment in label["segments"]]}
        for label in dataset.labels
    ],
}))
"""


def test_yolo_seg_read_by_ultralytics(run_output: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    code, stdout, _ = export(str(run_output), "--to", "yolo-seg", "--out", str(out), "--min-polygon-area", "0")
    assert code == 0 and "worst area disagreement" in stdout
    result = subprocess.run(
        [sys.executable, "-c", ULTRALYTICS_READER, str(out / "data.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics_config")},
    )
    read = json.loads(result.stdout.strip().splitlines()[-1])
    assert read["names"] == {str(i): name for i, name in enumerate(VOCABULARY)}
    ours = our_masks(run_output)
    assert len(read["labels"]) == len(ours)
    for label in read["labels"]:
        file_name = Path(label["im_file"]).relative_to((out / "images").resolve()).as_posix()
        height, width = label["shape"]
        yielded = []
        for category, segment in zip(label["cls"], label["segments"], strict=True):
            canvas = np.zeros((height, width), dtype=np.uint8)
            cv2.fillPoly(canvas, [(np.array(segment) * [width, height]).astype(np.int32)], 1)
            yielded.append((int(category) + 1, canvas.astype(bool)))
        # every instance, one to one: the same count per image and a class-respecting matching in which
        # every pair overlaps (bridges of two-piece instances add a line of pixels). Ultralytics drops
        # exact duplicate rows, and the region masks hold one exact duplicate: count distinct instances.
        distinct = list({(category, mask.tobytes()): (category, mask) for category, mask in ours[file_name]}.values())
        assert len(yielded) == len(distinct), file_name
        ious = np.array([[iou(a, b) if ca == cb else 0.0 for cb, b in distinct] for ca, a in yielded])
        rows, cols = linear_sum_assignment(-ious)
        assert ious[rows, cols].min() >= 0.9, (file_name, ious[rows, cols])


@pytest.mark.parametrize("polygons", [False, True])
def test_torchvision_and_cocoeval_read_both_files(run_output: Path, tmp_path: Path, polygons: bool) -> None:
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    coco_file = run_output
    if polygons:
        code, _, _ = export(str(run_output), "--to", "coco-polygons", "--out", str(tmp_path / "poly"))
        assert code == 0
        coco_file = tmp_path / "poly" / "annotations.json"
    images_dir = run_output.parent / "images"
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = wrap_dataset_for_transforms_v2(
            CocoDetection(str(images_dir), str(coco_file)), target_keys=("masks", "labels", "boxes")
        )
    ours = our_masks(run_output)
    for index in range(len(dataset)):
        _, target = dataset[index]
        file_name = dataset.coco.imgs[dataset.ids[index]]["file_name"]
        expected = ours[file_name]  # no piece of these masks is below the default --min-polygon-area
        assert target["labels"].tolist() == [category for category, _ in expected]
        for mask, (_, our_mask) in zip(target["masks"].numpy().astype(bool), expected, strict=True):
            # the region masks have no holes, so their polygons rasterise back to exactly the mask
            np.testing.assert_array_equal(mask, our_mask)

    if polygons:  # the polygon file as detections against the RLE file as ground truth
        assert evaluate_against(run_output, coco_file) == pytest.approx(1.0)


def evaluate_against(ground_truth_file: Path, detections_file: Path) -> float:
    """segm AP of a file's annotations (as detections) against another file's (as ground truth)."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(ground_truth_file))
        detections = ground_truth.loadRes(json.loads(detections_file.read_text())["annotations"])
        evaluator = COCOeval(ground_truth, detections, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_polygon_holes_are_filled_and_areas_stay_consistent(tmp_path: Path) -> None:
    ring = np.zeros((40, 50), dtype=bool)
    ring[5:35, 5:45] = True
    ring[15:25, 15:30] = False  # a 10x15 hole
    speck = np.zeros((40, 50), dtype=bool)
    speck[2, 48] = True
    run = _hand_run(tmp_path, [(1, 0.9, ring), (2, 0.8, speck)], size_hw=(40, 50))
    stats = export_coco_polygons(run, tmp_path / "out", min_polygon_area=1.0)
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert stats.dropped_small == 1 and len(data["annotations"]) == 1  # the one-pixel speck is dropped
    annotation = data["annotations"][0]
    assert annotation["area"] == 30 * 40  # the hole is filled
    assert annotation["bbox"] == [5.0, 5.0, 40.0, 30.0]
    assert stats.worst_area_disagreement == pytest.approx(150 / (30 * 40 - 150))


@pytest.mark.parametrize(
    "rule,expected",
    [
        # masks: A (class 1, score 0.9) columns 0-5; B (class 2, score 0.6) columns 3-9; C (class 3, score 0.7)
        # columns 4-5 only. score: C under A (0.9 > 0.7); B wins only where A and C are absent.
        ("score", [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]),
        # smallest: C (2 columns) over A (6 columns) over B (7 columns)
        ("smallest", [1, 1, 1, 1, 3, 3, 2, 2, 2, 2, 0, 0]),
    ],
)
def test_semantic_overlap_rules(tmp_path: Path, rule: str, expected: list[int]) -> None:
    masks = [np.zeros((3, 12), dtype=bool) for _ in range(3)]
    masks[0][:, 0:6] = True
    masks[1][:, 3:10] = True
    masks[2][:, 4:6] = True
    run = _hand_run(tmp_path, [(1, 0.9, masks[0]), (2, 0.6, masks[1]), (3, 0.7, masks[2])], size_hw=(3, 12))
    labels = label_map(run.annotations[1], (3, 12), rule=rule)
    np.testing.assert_array_equal(labels, np.array([expected] * 3))

    out = tmp_path / "semantic"
    export_semantic(run, out, overlap=rule)
    saved = Image.open(out / "labels" / "photo.png")
    assert saved.mode == "P" and saved.getpalette()[:6] == palette()[:6]
    np.testing.assert_array_equal(np.asarray(saved), np.array([expected] * 3))
    assert (out / "classes.txt").read_text().splitlines() == ["0 unlabelled", "1 a", "2 b", "3 c"]


def test_semantic_ties_go_to_the_earlier_mask(tmp_path: Path) -> None:
    first, second = np.ones((2, 2), dtype=bool), np.ones((2, 2), dtype=bool)
    run = _hand_run(tmp_path, [(2, 0.5, first), (3, 0.5, second)], size_hw=(2, 2))
    assert (label_map(run.annotations[1], (2, 2), rule="score") == 2).all()


def test_report_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib is optional: without it the report picture is skipped, not an error."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    report = RunReport(vocabulary=["a"]).to_json()
    assert save_report_png(report, tmp_path / "r.png") is False and not (tmp_path / "r.png").exists()


def test_fiftyone_conversion(run_output: Path) -> None:
    """FiftyOne's Detection wants a relative XYWH box and the mask cropped to it (checked here on the
    conversion; the FiftyOne client itself needs its database server)."""
    run = read_run_output(run_output)
    samples = fiftyone_samples(run)
    data = json.loads(run_output.read_text())
    assert [Path(sample["filepath"]).name for sample in samples] == [Path(i["file_name"]).name for i in data["images"]]
    annotations = iter(data["annotations"])
    for sample, image in zip(samples, data["images"], strict=True):
        assert Path(sample["filepath"]).is_file()
        assert len(sample["detections"]) == sum(a["image_id"] == image["id"] for a in data["annotations"])
        for detection in sample["detections"]:
            annotation = next(annotations)
            mask = decode_rle(annotation["segmentation"])
            x, y, w, h = (int(v) for v in annotation["bbox"])
            assert detection["bounding_box"] == pytest.approx(
                [x / image["width"], y / image["height"], w / image["width"], h / image["height"]]
            )
            np.testing.assert_array_equal(detection["mask"], mask[y : y + h, x : x + w])
            assert detection["mask"].sum() == mask.sum()  # the box holds the whole mask
            assert detection["label"] == VOCABULARY[annotation["category_id"] - 1]
            assert detection["confidence"] == annotation["score"]
            assert (detection["margin"], detection["entropy"]) == (annotation["margin"], annotation["entropy"])


def test_quality_controls_in_export(run_output: Path, tmp_path: Path) -> None:
    code, stdout, _ = export(
        str(run_output), "--to", "semantic", "--out", str(tmp_path / "s"), "--max-masks-per-image", "2"
    )
    total = len(json.loads(run_output.read_text())["annotations"])
    assert code == 0 and "instances written: 6" in stdout and f"dropped by the quality controls: {total - 6}" in stdout


@pytest.mark.parametrize(
    "content,message",
    [
        ("not json", "is not a COCO annotation file: it is not JSON"),
        ('{"images": []}', "it has no 'annotations' list"),
        (
            '{"info": {"description": "other"}, "images": [], "annotations": [], "categories": []}',
            "not one written by gem_sam.label",
        ),
    ],
)
def test_bad_annotation_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(content)
    code, _, err = export(str(path), "--to", "semantic", "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and str(path) in err


def test_missing_image_and_non_empty_out(run_output: Path, tmp_path: Path) -> None:
    empty_images = tmp_path / "elsewhere"
    empty_images.mkdir()
    code, _, err = export(
        str(run_output),
        "--to",
        "yolo-seg",
        "--out",
        str(tmp_path / "y"),
        "--copy-images",
        "--images",
        str(empty_images),
    )
    assert code == 2 and "astronaut.png" in err and "does not exist" in err

    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, _, err = export(str(run_output), "--to", "semantic", "--out", str(out))
    assert code == 2 and "is not empty" in err and "--overwrite" in err
    assert not (out / "classes.txt").exists() and (out / "keep.txt").read_text() == "x"


def test_copied_images(run_output: Path, tmp_path: Path) -> None:
    out = tmp_path / "y"
    assert export(str(run_output), "--to", "yolo-seg", "--out", str(out), "--copy-images")[0] == 0
    copied = out / "images" / "nested" / "coffee.jpg"
    assert copied.is_file() and not copied.is_symlink()
    assert (out / "labels" / "nested" / "coffee.txt").is_file()


def _hand_run(tmp_path: Path, masks: list[tuple[int, float, np.ndarray]], *, size_hw: tuple[int, int]) -> RunOutput:
    """A one-image run output with hand-made (category id, score, mask) annotations (and a blank
    photo of that size)."""
    Image.new("RGB", size_hw[::-1]).save(tmp_path / "photo.jpg")
    annotations = []
    for index, (category, score, mask) in enumerate(masks, start=1):
        rle = encode_rle(mask)
        bbox = [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})]
        annotations.append(
            {"id": index, "image_id": 1, "category_id": category, "score": score, "segmentation": rle,
             "area": int(mask.sum()), "bbox": bbox}
        )  # fmt: skip
    return RunOutput(
        path=tmp_path / "hand.json",
        images_dir=tmp_path,
        categories=[{"id": i, "name": name} for i, name in enumerate("abc", start=1)],
        images=[{"id": 1, "file_name": "photo.jpg", "height": size_hw[0], "width": size_hw[1]}],
        annotations={1: annotations},
        info={"description": "gem_sam"},
        dropped=0,
    )


FIFTYONE_READER = """
import json, sys
import fiftyone as fo
from gem_sam.cli.export import main

code = main([sys.argv[1], "--to", "fiftyone", "--dataset-name", "gem_sam_test"])
dataset = fo.load_dataset("gem_sam_test")
samples = []
for sample in dataset.iter_samples():
    samples.append({
        "filepath": sample.filepath,
        "detections": [
            {"label": d.label, "confidence": d.confidence, "bounding_box": list(d.bounding_box),
             "mask": d.mask.astype(int).tolist(), "predicted_iou": d["predicted_iou"], "similarity": d["similarity"],
             "margin": d["margin"], "entropy": d["entropy"]}
            for d in sample["gem_sam"].detections
        ],
    })
print(json.dumps({"code": code, "persistent": dataset.persistent, "samples": samples}))
"""


def test_fiftyone_dataset_read_back_through_fiftyone(run_output: Path, tmp_path: Path) -> None:
    """The fiftyone export with the real client and its database: every sample, mask, class and score
    read back through FiftyOne's API equals the COCO file's."""
    pytest.importorskip("fiftyone", reason="the dev extra installs fiftyone; run pip install -e '.[dev]'")
    env = {
        **os.environ,
        "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone_db"),
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_DO_NOT_TRACK": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", FIFTYONE_READER, str(run_output)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.strip().splitlines()[-1])
    assert read["code"] == 0 and read["persistent"]
    data = json.loads(run_output.read_text())
    images_dir = Path(data["info"]["images_dir"])
    assert [sample["filepath"] for sample in read["samples"]] == [
        str((images_dir / image["file_name"]).resolve()) for image in data["images"]
    ]
    for sample, image in zip(read["samples"], data["images"], strict=True):
        ours = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert len(sample["detections"]) == len(ours) > 0
        for detection, annotation in zip(sample["detections"], ours, strict=True):
            x, y, w, h = (int(v) for v in annotation["bbox"])
            assert detection["label"] == VOCABULARY[annotation["category_id"] - 1]
            assert detection["confidence"] == annotation["score"]
            assert detection["predicted_iou"] == annotation["predicted_iou"]
            assert detection["similarity"] == annotation["similarity"]
            assert (detection["margin"], detection["entropy"]) == (annotation["margin"], annotation["entropy"])
            assert detection["bounding_box"] == pytest.approx(
                [x / image["width"], y / image["height"], w / image["width"], h / image["height"]], abs=1e-12
            )
            np.testing.assert_array_equal(
                np.array(detection["mask"], dtype=bool), decode_rle(annotation["segmentation"])[y : y + h, x : x + w]
            )
