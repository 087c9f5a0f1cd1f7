"""One label map per image: pixel value = category id (1..C), 0 = unlabelled.

    OUT/images/<name>                 the images (links or copies; rotated photos as upright copies)
    OUT/labels/<name stem>.png        8-bit palette PNG (16-bit greyscale with more than 255 classes)
    OUT/classes.txt                   "id name" per line, 0 unlabelled first

Label maps are in the upright frame of the images beside them. Images whose names differ only in
their extension are renamed so that each keeps its own label map (``paths.distinct_names``).

Where masks overlap, one wins per pixel: ``score`` (default) gives the pixel to the mask with the
highest score; ``smallest`` to the smallest mask (parts over wholes). Ties go to the mask that comes
first in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..mask_ops import decode_rle
from .layout import PlacedImage, write_images
from .source import RunOutput
from .stats import ExportStats

OVERLAP_RULES: tuple[str, ...] = ("score", "smallest")


def palette() -> list[int]:
    """Flat RGB palette of 256 entries: 0 black, then well-separated hues (the PASCAL VOC bit pattern)."""
    colours = [0, 0, 0]
    for index in range(1, 256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours += [r, g, b]
    return colours


def paint_order(annotations: Sequence[dict[str, Any]], rule: str) -> list[int]:
    """Indices in the order masks are painted: the winner of an overlap is painted last."""
    if rule not in OVERLAP_RULES:
        raise ValueError(f"overlap rule {rule!r} is not one of {', '.join(OVERLAP_RULES)}")
    if rule == "score":
        # ascending score; among equal scores the earlier mask last
        return sorted(range(len(annotations)), key=lambda i: (annotations[i]["score"], -i))
    return sorted(range(len(annotations)), key=lambda i: (-annotations[i]["area"], -i))


def label_map(annotations: Sequence[dict[str, Any]], size_hw: tuple[int, int], *, rule: str) -> np.ndarray:
    """[H, W] category ids (uint16), 0 where no mask lies."""
    out = np.zeros(size_hw, dtype=np.uint16)
    for index in paint_order(annotations, rule):
        out[decode_rle(annotations[index]["segmentation"])] = annotations[index]["category_id"]
    return out


def save_label_map(labels: np.ndarray, path: Path, *, n_classes: int) -> None:
    """[H, W] category ids -> an 8-bit palette PNG, or a 16-bit greyscale PNG beyond 255 classes."""
    if n_classes > 65535:
        raise ValueError(f"a semantic label map holds at most 65535 classes; this run has {n_classes}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if n_classes <= 255:
        image = Image.fromarray(labels.astype(np.uint8))  # mode L
        image.putpalette(palette())  # makes it a palette image
    else:
        image = Image.fromarray(labels.astype(np.uint16))  # mode I;16
    image.save(path)


def export_semantic(
    run: RunOutput,
    out_dir: Path,
    *,
    overlap: str = "score",
    copy_images: bool = False,
    placed: Sequence[PlacedImage] | None = None,
) -> ExportStats:
    """Write a label map per image of ``run``, and the images, into ``out_dir``.

    ``placed``: where each image goes (``layout.plan_images``); by default every image under its own
    name, checked before anything is written."""
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap rule {overlap!r} is not one of {', '.join(OVERLAP_RULES)}")
    placed = write_images(run.images, run.image_path, out_dir, placed=placed, copy=copy_images)
    stats = ExportStats(dropped_by_controls=run.dropped)
    n_classes = len(run.categories)
    for item in placed:
        image = item.image
        annotations = run.annotations.get(image["id"], [])
        labels = label_map(annotations, (image["height"], image["width"]), rule=overlap)
        save_label_map(labels, (out_dir / "labels" / item.relative).with_suffix(".png"), n_classes=n_classes)
        stats.images += 1
        stats.instances += len(annotations)
    lines = ["0 unlabelled", *(f"{category['id']} {category['name']}" for category in run.categories)]
    (out_dir / "classes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return stats
