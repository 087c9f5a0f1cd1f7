"""Reading a finished run: the COCO file that ``gem_sam.label`` wrote, checked, with the dataset
quality controls applied per image."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..labelling.quality import QualityControls, select_masks
from .layout import check_file_names

GEM_SAM_DESCRIPTION = "gem_sam"


@dataclass(frozen=True)
class RunOutput:
    """A run's images, categories and (filtered) annotations; ``images_dir`` holds the image files."""

    path: Path
    images_dir: Path | None
    categories: list[dict[str, Any]]  # COCO categories, ids 1..C in vocabulary order
    images: list[dict[str, Any]]  # COCO images: id, file_name (relative to images_dir), width, height
    annotations: dict[int, list[dict[str, Any]]]  # image id -> its COCO annotations (RLE segmentations)
    info: dict[str, Any]
    dropped: int  # annotations removed by the quality controls

    @property
    def names(self) -> list[str]:
        return [category["name"] for category in self.categories]

    def image_path(self, image: dict[str, Any]) -> Path:
        if self.images_dir is None:
            raise FileNotFoundError(
                f"{str(self.path)!r} does not say where its images are; pass the folder that was labelled with --images"
            )
        return self.images_dir / image["file_name"]


def check_unique_images(images: list[dict[str, Any]], *, source: Path) -> None:
    """Refuse a COCO file that lists an image twice (the same ``id`` or ``file_name``): its exports would
    write one file twice and mix the two entries' labels."""
    for key in ("id", "file_name"):
        first: dict[str, int] = {}
        for position, image in enumerate(images):
            value = image.get(key)
            seen = json.dumps(value, sort_keys=True)
            if seen in first:
                raise ValueError(
                    f"{str(source)!r}: images {first[seen] + 1} and {position + 1} have the same {key} {value!r}; "
                    "each image may be listed once (a Label Studio project with tasks imported twice gives this: "
                    "import it again with the current gem_sam, which merges them)"
                )
            first[seen] = position


def _not_coco(path: Path, why: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a COCO annotation file: {why}")


def read_run_output(
    path: str | os.PathLike, *, images_dir: str | os.PathLike | None = None, controls: QualityControls | None = None
) -> RunOutput:
    """Load and check a COCO file written by ``gem_sam.label``; apply ``controls`` to each image.

    ``images_dir`` defaults to the folder the run recorded in ``info.images_dir``. Raises
    ``FileNotFoundError`` or ``ValueError`` naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file {str(path)!r} does not exist" + (" (it is a folder)" if path.is_dir() else "")
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _not_coco(path, f"it is not JSON ({error})") from error
    if not isinstance(data, dict):
        raise _not_coco(path, "its top level is not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _not_coco(path, f"it has no {key!r} list")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    if info.get("description") != GEM_SAM_DESCRIPTION:
        raise ValueError(
            f"{str(path)!r} is a COCO file but not one written by gem_sam.label (its info.description is "
            f"{info.get('description')!r}, expected {GEM_SAM_DESCRIPTION!r}); export reads gem_sam's own output"
        )
    check_file_names(data["images"], source=path)
    check_unique_images(data["images"], source=path)
    categories = data["categories"]
    if [category.get("id") for category in categories] != list(range(1, len(categories) + 1)):
        raise ValueError(f"{str(path)!r}: category ids must be 1..{len(categories)} in order, as gem_sam writes them")
    controls = controls or QualityControls()
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in data["annotations"]:
        segmentation = annotation.get("segmentation")
        if not isinstance(segmentation, dict) or "counts" not in segmentation or "score" not in annotation:
            raise ValueError(
                f"{str(path)!r}: annotation {annotation.get('id')!r} has no RLE segmentation or no score; "
                "export reads the RLE file that gem_sam.label writes"
            )
        if controls.min_similarity is not None and "similarity" not in annotation:
            raise ValueError(
                f"{str(path)!r}: annotation {annotation.get('id')!r} has no 'similarity' (written by an older "
                "gem_sam); --min-similarity needs it. Label again, or leave --min-similarity out."
            )
        by_image[annotation["image_id"]].append(annotation)
    dropped = 0
    if controls.active:
        for image_id, annotations in by_image.items():
            kept = select_masks(
                classes=[annotation["category_id"] for annotation in annotations],
                scores=[annotation["score"] for annotation in annotations],
                segmentations=[annotation["segmentation"] for annotation in annotations],
                similarities=[annotation.get("similarity", 0.0) for annotation in annotations],
                controls=controls,
            )
            dropped += len(annotations) - len(kept)
            by_image[image_id] = [annotations[i] for i in kept]
    if images_dir is None and info.get("images_dir"):
        images_dir = info["images_dir"]
    return RunOutput(
        path=path,
        images_dir=Path(images_dir) if images_dir is not None else None,
        categories=categories,
        images=data["images"],
        annotations=dict(by_image),
        info=info,
        dropped=dropped,
    )
