"""COCO output: instance annotations with RLE masks, correct by construction.

``area`` is the mask's pixel count, ``bbox`` the XYWH box of the mask, ``iscrowd`` 0, ``counts`` a
str, category ids follow the vocabulary order starting at 1, and every annotation has a ``score``
(so the same list is a valid ``COCO.loadRes`` result file).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write


@dataclass(frozen=True)
class LabelledImage:
    """One image's result: its path relative to the image folder, size and annotations.

    ``width`` and ``height`` are those of the upright image (EXIF orientation applied), and so are the
    masks. ``fingerprint`` identifies the file the result came from (``run_store.file_fingerprint``);
    ``background`` counts the masks each background prompt won (not written).
    Each annotation holds ``class_index`` (into the vocabulary), ``segmentation`` (COCO RLE),
    ``area``, ``bbox`` (XYWH), ``score``, ``similarity`` (best pooled cosine similarity; absent in
    records of older versions), ``predicted_iou`` and ``stability_score``.
    """

    file_name: str
    width: int
    height: int
    annotations: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = None
    background: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "file_name": self.file_name,
            "fingerprint": self.fingerprint,
            "background": self.background,
            "width": self.width,
            "height": self.height,
            "annotations": self.annotations,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelledImage:
        return cls(
            file_name=data["file_name"],
            width=data["width"],
            height=data["height"],
            annotations=data["annotations"],
            fingerprint=data.get("fingerprint"),
            background=data.get("background", {}),
        )


def categories(vocabulary: Sequence[str]) -> list[dict[str, Any]]:
    """COCO categories: id i + 1 for the i-th vocabulary entry."""
    return [{"id": index + 1, "name": name, "supercategory": "object"} for index, name in enumerate(vocabulary)]


def _coco_annotation(annotation: dict[str, Any], *, annotation_id: int, image_id: int) -> dict[str, Any]:
    extra = {key: float(annotation[key]) for key in ("similarity", "margin", "entropy") if key in annotation}
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": int(annotation["class_index"]) + 1,
        "segmentation": annotation["segmentation"],
        "area": int(annotation["area"]),
        "bbox": [float(v) for v in annotation["bbox"]],
        "iscrowd": 0,
        "score": float(annotation["score"]),
        "predicted_iou": float(annotation["predicted_iou"]),
        "stability_score": float(annotation["stability_score"]),
        **extra,
    }


def build_coco(
    images: Iterable[LabelledImage], vocabulary: Sequence[str], *, info: dict[str, Any] | None = None
) -> dict:
    """A COCO dataset dict; images sorted by file name get ids 1.., annotations ids 1.. in that order."""
    coco_images, coco_annotations = [], []
    for image_id, image in enumerate(sorted(images, key=lambda item: item.file_name), start=1):
        coco_images.append({"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for annotation in image.annotations:
            coco_annotations.append(
                _coco_annotation(annotation, annotation_id=len(coco_annotations) + 1, image_id=image_id)
            )
    return {
        "info": info or {"description": "gem_sam open-vocabulary masks"},
        "images": coco_images,
        "annotations": coco_annotations,
        "categories": categories(vocabulary),
    }


def write_coco_streaming(
    images: Iterable[LabelledImage],
    vocabulary: Sequence[str],
    path: str | os.PathLike,
    *,
    info: dict[str, Any] | None = None,
) -> int:
    """Write the same file as ``build_coco`` + ``write_json_atomic`` holding one image's annotations
    at a time. ``images`` must come sorted by file name. ``info`` is serialised once ``images`` is
    consumed, so it may hold totals gathered while they stream. Returns the number of annotations."""
    path = Path(path)
    image_entries = []
    count = 0
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) as annotations:
        for image_id, image in enumerate(images, start=1):
            image_entries.append(
                {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
            )
            for annotation in image.annotations:
                count += 1
                annotations.write("," if count > 1 else "")
                annotations.write(json.dumps(_coco_annotation(annotation, annotation_id=count, image_id=image_id)))
        annotations.seek(0)
        with atomic_write(path) as out:
            out.write('{"info": ' + json.dumps(info or {"description": "gem_sam open-vocabulary masks"}))
            out.write(', "images": ' + json.dumps(image_entries) + ', "annotations": [')
            for chunk in iter(lambda: annotations.read(1 << 20), ""):
                out.write(chunk)
            out.write('], "categories": ' + json.dumps(categories(vocabulary)) + "}")
    return count
