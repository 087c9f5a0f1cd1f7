"""Reviewed labels back from Label Studio: its JSON export after review, as a gem_sam COCO file that
every export reads.

Per task, the latest submitted annotation counts (cancelled ones are skipped): brush regions are
decoded exactly, polygon regions rasterised. Regions are matched to gem_sam's predictions by their
region id, which Label Studio keeps when a reviewer starts from the predictions: a region with the
prediction's mask and class is *kept*, one whose mask or class changed is *edited*, a new id is
*added*, and a prediction missing from the annotation was *deleted*. Tasks nobody reviewed are left out,
or keep their predictions with ``unreviewed="keep"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from ..export.source import RunOutput
from ..mask_ops import decode_rle, encode_rle, mask_bbox_xywh
from .brush import brush_rle_to_mask, polygon_to_mask

UNREVIEWED_RULES: tuple[str, ...] = ("drop", "keep")
REGION_TYPES: tuple[str, ...] = ("brushlabels", "polygonlabels")


@dataclass
class ReviewCounts:
    """What the review did to gem_sam's masks."""

    kept: int = 0  # predictions accepted as they were
    edited: int = 0  # predictions whose mask or class the reviewer changed
    added: int = 0  # regions the reviewer drew
    deleted: int = 0  # predictions the reviewer removed
    unreviewed: int = 0  # tasks without a submitted annotation
    reviewed: int = 0  # tasks with one
    merged: list[str] = field(default_factory=list)  # images whose several tasks were merged into one

    def lines(self) -> list[str]:
        out = [
            f"tasks reviewed: {self.reviewed}, not reviewed: {self.unreviewed}",
            f"regions kept: {self.kept}, edited: {self.edited}, added: {self.added}, deleted: {self.deleted}",
        ]
        if self.merged:
            out.append(
                f"images with several tasks (imported more than once), merged: {len(self.merged)}; the latest "
                "submitted annotation of an image's tasks counts"
            )
            out += [f"  {line}" for line in self.merged]
        return out


@dataclass(frozen=True)
class Region:
    """One region of a task: its id, class and [H, W] bool mask."""

    region_id: str
    class_name: str
    mask: np.ndarray = field(repr=False)
    score: float | None = None


class ReviewError(ValueError):
    """A Label Studio export that cannot be imported; the message names the task."""


def _task_name(task: dict[str, Any]) -> str:
    file_name = task.get("data", {}).get("gem_sam_file_name")
    return f"task {task.get('id')!r}" + (f" ({file_name})" if file_name else "")


def regions_of(results: list[dict[str, Any]], *, task: dict[str, Any], classes: set[str]) -> list[Region]:
    """The brush and polygon regions of a result list; other result types (relations, text) are ignored.
    Labels outside ``classes`` and undecodable regions are refused, naming the task."""
    regions = []
    for result in results:
        kind = result.get("type")
        if kind not in REGION_TYPES:
            continue
        value = result.get("value", {})
        labels = value.get(kind) or []
        if len(labels) != 1:
            raise ReviewError(f"{_task_name(task)}: region {result.get('id')!r} has {len(labels)} labels; give it one")
        if labels[0] not in classes:
            raise ReviewError(
                f"{_task_name(task)}: label {labels[0]!r} is not a class of the run ({', '.join(sorted(classes))}); "
                "rename it in the project, or label again with it in the vocabulary"
            )
        try:
            size_hw = (int(result["original_height"]), int(result["original_width"]))
            mask = (
                brush_rle_to_mask(value["rle"], size_hw)
                if kind == "brushlabels"
                else polygon_to_mask(value["points"], size_hw)
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ReviewError(f"{_task_name(task)}: region {result.get('id')!r} cannot be read ({error})") from error
        regions.append(Region(str(result.get("id")), labels[0], mask, result.get("score")))
    return regions


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's latest submitted annotation (by update time, then id), or None."""
    submitted = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not submitted:
        return None
    return max(submitted, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def read_export(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The tasks of a Label Studio JSON export; a malformed file is refused with what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label Studio export {str(path)!r} does not exist")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReviewError(f"{str(path)!r} is not a Label Studio JSON export: it is not JSON ({error})") from error
    if not isinstance(tasks, list) or not all(isinstance(task, dict) and "data" in task for task in tasks):
        raise ReviewError(
            f"{str(path)!r} is not a Label Studio JSON export: expected a list of tasks, each with 'data' "
            "(export the project as JSON, not JSON-MIN or COCO)"
        )
    return tasks


def merge_duplicate_tasks(tasks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One task per image: tasks of the same ``gem_sam_file_name`` (a project whose tasks were imported
    twice) become the first of them with the annotations of all, so that the latest submitted one counts
    as it does within a task. Returns the tasks in first-seen order and a line per merged image."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for task in tasks:
        groups.setdefault(task["data"].get("gem_sam_file_name"), []).append(task)
    merged, lines = [], []
    for file_name, group in groups.items():
        if len(group) == 1 or file_name is None:
            merged.extend(group)
            continue
        annotations = [a for task in group for a in task.get("annotations") or []]
        merged.append({**group[0], "annotations": annotations})
        lines.append(f"{file_name}: tasks {', '.join(str(task.get('id')) for task in group)}")
    return merged, lines


def _same(a: Region, b: Region) -> bool:
    return a.class_name == b.class_name and a.mask.shape == b.mask.shape and bool((a.mask == b.mask).all())


def predicted_regions(
    task: dict[str, Any], annotation: dict[str, Any] | None, run: RunOutput, image: dict[str, Any], *, classes: set[str]
) -> list[Region]:
    """gem_sam's regions of a task: from its predictions when the export holds them whole, else from the
    prediction the annotation started from, else the run's own masks of the image (as the export made
    them: region ids ``gs<image id>-<index>``)."""
    whole = [prediction for prediction in task.get("predictions") or [] if isinstance(prediction, dict)]
    if not whole and annotation is not None and isinstance(annotation.get("prediction"), dict):
        whole = [annotation["prediction"]]
    if whole:
        return [region for p in whole for region in regions_of(p.get("result", []), task=task, classes=classes)]
    return [
        Region(f"gs{image['id']}-{index}", run.names[a["category_id"] - 1], decode_rle(a["segmentation"]), a["score"])
        for index, a in enumerate(run.annotations.get(image["id"], []))
    ]


def reviewed_images(
    tasks: list[dict[str, Any]], run: RunOutput, *, unreviewed: str, counts: ReviewCounts
) -> Iterator[tuple[dict[str, Any], list[tuple[Region, str]]]]:
    """Per task kept in the output: (the run's COCO image, [(region, "kept" | "edited" | "added")])."""
    if unreviewed not in UNREVIEWED_RULES:
        raise ValueError(f"unreviewed={unreviewed!r} is not one of {', '.join(UNREVIEWED_RULES)}")
    by_file = {image["file_name"]: image for image in run.images}
    classes = set(run.names)
    for task in tasks:
        file_name = task["data"].get("gem_sam_file_name")
        if file_name not in by_file:
            raise ReviewError(
                f"{_task_name(task)}: its image {file_name!r} is not in the run; import the tasks that "
                "'gem_sam.export --to label-studio' wrote for this run"
            )
        annotation = latest_annotation(task)
        predicted = predicted_regions(task, annotation, run, by_file[file_name], classes=classes)
        if annotation is None:
            counts.unreviewed += 1
            if unreviewed == "keep":
                yield by_file[file_name], [(region, "unreviewed") for region in predicted]
            continue
        counts.reviewed += 1
        by_id = {region.region_id: region for region in predicted}
        regions = regions_of(annotation.get("result", []), task=task, classes=classes)
        out = []
        for region in regions:
            original = by_id.get(region.region_id)
            status = "added" if original is None else "kept" if _same(region, original) else "edited"
            setattr(counts, status, getattr(counts, status) + 1)
            out.append((region, status))
        counts.deleted += len(set(by_id) - {region.region_id for region in regions})
        yield by_file[file_name], out


def import_reviewed(
    export_path: str | os.PathLike, run: RunOutput, out_path: str | os.PathLike, *, unreviewed: str = "drop"
) -> ReviewCounts:
    """Write the reviewed labels of a Label Studio export as a gem_sam COCO file at ``out_path``: the
    run's images, categories and settings, one annotation per region (``review`` says kept, edited,
    added or unreviewed; ``score`` is 1.0 for what a reviewer drew or changed). Nothing is written when
    the export is refused."""
    tasks, merged = merge_duplicate_tasks(read_export(export_path))
    counts = ReviewCounts(merged=merged)
    class_id = {name: index for index, name in enumerate(run.names, start=1)}
    images, annotations = [], []
    for image, regions in reviewed_images(tasks, run, unreviewed=unreviewed, counts=counts):
        images.append(image)
        for region, status in regions:
            if region.mask.shape != (image["height"], image["width"]):
                raise ReviewError(
                    f"image {image['file_name']!r}: a region of {region.mask.shape[1]}x{region.mask.shape[0]} "
                    f"does not fit the image's {image['width']}x{image['height']}"
                )
            if not region.mask.any():
                continue
            score = region.score if status in ("kept", "unreviewed") and region.score is not None else 1.0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": class_id[region.class_name],
                    "segmentation": encode_rle(region.mask),
                    "area": int(region.mask.sum()),
                    "bbox": [float(v) for v in mask_bbox_xywh(region.mask)],
                    "iscrowd": 0,
                    "score": float(score),
                    "review": status,
                }
            )
    info = {
        **run.info,
        "review": {"source": str(Path(export_path).resolve()), "unreviewed_rule": unreviewed, **vars(counts)},
    }
    data = {"info": info, "images": images, "annotations": annotations, "categories": run.categories}
    write_json_atomic(data, out_path)
    return counts
