"""A run as Label Studio tasks: each image with gem_sam's masks as brush predictions, and a labelling
config whose labels are the run's classes.

    OUT/label_config.xml   an Image with BrushLabels (and PolygonLabels, for regions drawn by hand) of
                           the run's classes: paste it into a new project's labelling interface
    OUT/tasks.json         one task per image: ``data.image`` (a URL Label Studio serves), the image's
                           ``gem_sam_file_name``, and one prediction with a brushlabels region per mask,
                           whose ``score`` is 1 - the image's review priority (least sure images lowest)

Image URLs are Label Studio's local-files URLs (``/data/local-files/?d=<path under the document
root>``) by default, or ``--image-url-prefix`` + the file name for images served elsewhere. Masks,
``original_width`` and ``original_height`` are in the upright frame (EXIF orientation applied), as
browsers show photos.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from ..export.source import RunOutput
from ..export.stats import ExportStats
from ..mask_ops import decode_rle
from ..naming.uncertainty import annotations_review_priority
from .brush import mask_to_brush_rle

BRUSH_NAME = "label"  # the BrushLabels control: gem_sam's masks
POLYGON_NAME = "polygon"  # the PolygonLabels control: regions a reviewer draws as polygons
IMAGE_NAME = "image"  # the Image object, fed from data.image
LOCAL_FILES_URL = "/data/local-files/?d="


def label_config(classes: Sequence[str]) -> str:
    """The labelling config of a project for these classes (XML)."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in classes)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}" zoom="true"/>\n'
        f'  <BrushLabels name="{BRUSH_NAME}" toName="{IMAGE_NAME}">\n{labels}\n  </BrushLabels>\n'
        f'  <PolygonLabels name="{POLYGON_NAME}" toName="{IMAGE_NAME}">\n{labels}\n  </PolygonLabels>\n'
        "</View>\n"
    )


def model_version(settings: dict[str, Any]) -> str:
    """``gem_sam <version>``, the models, and a digest of every setting of the run."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:10]
    models = " ".join(
        str(settings[key]) for key in ("clip_model", "pretrained", "method", "sam_model") if settings.get(key)
    )
    try:
        installed = version("gem_sam")
    except PackageNotFoundError:  # running from a source tree that is not installed
        installed = "(source)"
    return f"gem_sam {installed} {models} settings:{digest}".replace("  ", " ")


def brush_region(mask: np.ndarray, class_name: str, *, score: float, region_id: str) -> dict[str, Any]:
    """One brushlabels result of a [H, W] bool mask."""
    height, width = mask.shape
    return {
        "id": region_id,
        "from_name": BRUSH_NAME,
        "to_name": IMAGE_NAME,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "score": float(score),
        "value": {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [class_name]},
    }


def prediction(
    annotations: Sequence[dict[str, Any]], class_names: Sequence[str], *, version: str, id_prefix: str
) -> dict[str, Any]:
    """A Label Studio prediction of one image's masks: ``annotations`` with an RLE ``segmentation``, a
    ``score`` and a ``margin``, ``class_names`` the class of each.

    The prediction's ``score`` is 1 minus the image's review priority
    (``naming.uncertainty.annotations_review_priority``): Label Studio's uncertainty sampling and its
    sort by prediction score (ascending) then bring the least sure images first."""
    regions = [
        brush_region(
            decode_rle(annotation["segmentation"]), name, score=annotation["score"], region_id=f"{id_prefix}-{index}"
        )
        for index, (annotation, name) in enumerate(zip(annotations, class_names, strict=True))
    ]
    confidence = 1.0 - annotations_review_priority(annotations)
    return {"model_version": version, "score": confidence, "result": regions}


def image_url(path: Path, *, document_root: Path | None, url_prefix: str | None, file_name: str) -> str:
    """The URL Label Studio reads an image from: ``url_prefix`` + the file name, or a local-files URL of
    ``path`` relative to ``document_root`` (refused when the image is not under it)."""
    if url_prefix is not None:
        return url_prefix + quote(file_name)
    root = (document_root or path.parent).resolve()
    try:
        relative = path.resolve().relative_to(root)
    except ValueError as error:
        raise ValueError(
            f"image {str(path)!r} is not under --document-root {str(root)!r}; give a document root that holds "
            "the labelled folder (Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), or --image-url-prefix"
        ) from error
    return LOCAL_FILES_URL + quote(relative.as_posix())


def label_studio_tasks(
    run: RunOutput,
    *,
    document_root: Path | None = None,
    image_url_prefix: str | None = None,
    review_first: int | None = None,
) -> list[dict[str, Any]]:
    """One task per image of ``run`` with its prediction. ``document_root`` (default: the labelled folder)
    is where Label Studio serves local files from; an image outside it is refused here. ``review_first``:
    only the images of highest review priority, that many, least sure first."""
    root = document_root if document_root is not None else run.images_dir
    version = model_version(run.info.get("settings", {}))
    images = run.images
    if review_first is not None:
        if review_first < 1:
            raise ValueError(f"--review-first {review_first} must be at least 1")
        priority = {image["id"]: annotations_review_priority(run.annotations.get(image["id"], [])) for image in images}
        images = sorted(images, key=lambda image: -priority[image["id"]])[:review_first]  # stable: file order on ties
    tasks = []
    for image in images:
        path, file_name = run.image_path(image), image["file_name"]
        url = image_url(path, document_root=root, url_prefix=image_url_prefix, file_name=file_name)
        annotations = run.annotations.get(image["id"], [])
        tasks.append(
            {
                "data": {IMAGE_NAME: url, "gem_sam_file_name": file_name},
                "predictions": [
                    prediction(
                        annotations,
                        [run.names[a["category_id"] - 1] for a in annotations],
                        version=version,
                        id_prefix=f"gs{image['id']}",
                    )
                ],
            }
        )
    return tasks


def export_label_studio(
    run: RunOutput,
    out_dir: Path,
    *,
    document_root: Path | None = None,
    image_url_prefix: str | None = None,
    tasks: list[dict[str, Any]] | None = None,
) -> ExportStats:
    """Write ``label_config.xml`` and ``tasks.json`` for ``run`` into ``out_dir`` (``tasks``: made by
    ``label_studio_tasks`` beforehand, so that every check runs before the first write)."""
    if tasks is None:
        tasks = label_studio_tasks(run, document_root=document_root, image_url_prefix=image_url_prefix)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "label_config.xml").write_text(label_config(run.names), encoding="utf-8")
    (out_dir / "tasks.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    stats = ExportStats(dropped_by_controls=run.dropped)
    stats.images = len(tasks)
    stats.instances = sum(len(task["predictions"][0]["result"]) for task in tasks)
    return stats
