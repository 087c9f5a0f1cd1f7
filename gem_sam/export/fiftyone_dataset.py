"""A FiftyOne dataset of a run: images with their masks, classes and scores, to browse, filter by
score and tag mistakes. FiftyOne is optional (``pip install 'gem_sam[fiftyone]'``).

``fiftyone_samples`` is the conversion as plain data; ``load_fiftyone_dataset`` hands it to FiftyOne.
FiftyOne's ``Detection`` takes a box ``[x, y, w, h]`` relative to the image size (0..1) and a mask
cropped to that box.
"""

from __future__ import annotations

from typing import Any

from ..mask_ops import decode_rle
from .source import RunOutput
from .stats import ExportStats


def fiftyone_samples(run: RunOutput) -> list[dict[str, Any]]:
    """Per image: ``filepath`` (absolute) and ``detections``, each with ``label``, ``confidence``,
    ``bounding_box`` (relative XYWH), ``mask`` (bool, cropped to the box), SAM's scores, and the
    class distribution's ``margin`` and ``entropy`` (sort by margin to see the least sure first)."""
    samples = []
    for image in run.images:
        height, width = image["height"], image["width"]
        detections = []
        for annotation in run.annotations.get(image["id"], []):
            x, y, w, h = (int(round(v)) for v in annotation["bbox"])
            mask = decode_rle(annotation["segmentation"])
            detections.append(
                {
                    "label": run.names[annotation["category_id"] - 1],
                    "confidence": float(annotation["score"]),
                    "bounding_box": [x / width, y / height, w / width, h / height],
                    "mask": mask[y : y + h, x : x + w],
                    "predicted_iou": annotation.get("predicted_iou"),
                    "stability_score": annotation.get("stability_score"),
                    "similarity": annotation.get("similarity"),
                    "margin": annotation.get("margin"),
                    "entropy": annotation.get("entropy"),
                }
            )
        samples.append({"filepath": str(run.image_path(image).resolve()), "detections": detections})
    return samples


def load_fiftyone_dataset(run: RunOutput, *, name: str, overwrite: bool) -> tuple[Any, ExportStats]:
    """Create (or with ``overwrite`` replace) the FiftyOne dataset ``name``; field ``gem_sam`` holds
    the masks. Returns the dataset and what was loaded."""
    try:
        import fiftyone as fo
    except ImportError as error:
        raise ImportError("the fiftyone export needs FiftyOne: pip install 'gem_sam[fiftyone]'") from error
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"a FiftyOne dataset named {name!r} exists; choose another --dataset-name or --overwrite")
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    stats = ExportStats(dropped_by_controls=run.dropped)
    samples = []
    for entry in fiftyone_samples(run):
        detections = [
            fo.Detection(**{key: value for key, value in detection.items() if value is not None})
            for detection in entry["detections"]
        ]
        samples.append(fo.Sample(filepath=entry["filepath"], gem_sam=fo.Detections(detections=detections)))
        stats.images += 1
        stats.instances += len(detections)
    dataset.add_samples(samples)
    return dataset, stats
