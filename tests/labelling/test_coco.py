"""COCO output: loads with pycocotools, is accepted by loadRes, and evaluates against itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gem_sam.atomic import write_json_atomic
from gem_sam.labelling.coco import LabelledImage, build_coco, write_coco_streaming
from gem_sam.mask_ops import encode_rle, mask_bbox_xywh

from ..conftest import self_evaluation


def _annotation(mask: np.ndarray, class_index: int, score: float) -> dict:
    return {
        "class_index": class_index,
        "segmentation": encode_rle(mask),
        "area": int(mask.sum()),
        "bbox": mask_bbox_xywh(mask),
        "score": score,
        "predicted_iou": 0.9,
        "stability_score": 0.95,
    }


def _images() -> list[LabelledImage]:
    ring = np.zeros((40, 60), dtype=bool)
    ring[5:30, 10:50] = True
    ring[12:22, 20:40] = False  # a mask with a hole stays an ordinary instance
    block = np.zeros((40, 60), dtype=bool)
    block[20:38, 2:20] = True
    other = np.zeros((30, 20), dtype=bool)
    other[3:9, 4:15] = True
    return [
        LabelledImage("sub/b.jpg", 60, 40, [_annotation(ring, 1, 0.8), _annotation(block, 0, 0.6)]),
        LabelledImage("a.png", 20, 30, [_annotation(other, 2, 0.9)]),
    ]


def test_structure_ids_and_fields() -> None:
    coco = build_coco(_images(), ["cat", "dog", "person"])
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert [(i["id"], i["file_name"]) for i in coco["images"]] == [(1, "a.png"), (2, "sub/b.jpg")]
    first = coco["annotations"][0]
    assert first["image_id"] == 1 and first["category_id"] == 3 and first["iscrowd"] == 0
    ring = coco["annotations"][1]
    assert ring["area"] == 25 * 40 - 10 * 20  # pixel count, not the box area
    assert ring["bbox"] == [10.0, 5.0, 40.0, 25.0]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    assert all(isinstance(a["segmentation"]["counts"], str) for a in coco["annotations"])


def test_pycocotools_loads_and_self_evaluation_gives_ap_one(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json_atomic(build_coco(_images(), ["cat", "dog", "person"]), path)
    evaluator = self_evaluation(path)
    assert len(evaluator.cocoGt.getAnnIds()) == 3
    assert evaluator.stats[0] == pytest.approx(1.0, abs=1e-9)  # AP@[.5:.95]


def test_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    write_json_atomic({"a": "é"}, tmp_path / "x.json")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == {"a": "é"}


def test_streaming_writer_gives_the_same_file_content(tmp_path: Path) -> None:
    vocabulary = ["cat", "dog", "person"]
    images = sorted(_images(), key=lambda image: image.file_name)
    count = write_coco_streaming(iter(images), vocabulary, tmp_path / "streamed.json", info={"a": 1})
    assert count == 3
    expected = build_coco(images, vocabulary, info={"a": 1})
    assert json.loads((tmp_path / "streamed.json").read_text()) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.json"]
