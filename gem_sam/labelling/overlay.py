"""Overlays for people: the image with its masks coloured by class, outlined and named."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..mask_ops import decode_rle

FILL_OPACITY = 0.45


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour per class index (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def _outline(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def render_overlay(
    image_rgb: np.ndarray, annotations: Sequence[dict[str, Any]], vocabulary: Sequence[str]
) -> Image.Image:
    """HxWx3 uint8 image + annotations (``class_index``, ``segmentation``, ``bbox``, ``score``) -> RGB image.

    Larger masks are drawn first so that small ones stay visible; each mask is filled with its class
    colour, outlined, and labelled "name score" at the top-left of its box.
    """
    canvas = image_rgb.astype(np.float32)
    ordered = sorted(annotations, key=lambda annotation: -annotation["area"])
    for annotation in ordered:
        mask = decode_rle(annotation["segmentation"])
        colour = np.array(class_colour(annotation["class_index"]), dtype=np.float32)
        canvas[mask] = (1 - FILL_OPACITY) * canvas[mask] + FILL_OPACITY * colour
        canvas[_outline(mask)] = colour
    overlay = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(overlay)
    font = ImageFont.load_default(size=max(12, min(image_rgb.shape[:2]) // 40))
    for annotation in ordered:
        x, y, _, _ = annotation["bbox"]
        text = f"{vocabulary[annotation['class_index']]} {annotation['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=class_colour(annotation["class_index"]))
        draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return overlay


def save_overlay(
    image_rgb: np.ndarray, annotations: Sequence[dict[str, Any]], vocabulary: Sequence[str], *, path: Path
) -> Path:
    """Write the overlay as a JPEG file at ``path`` (its folders are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image_rgb, annotations, vocabulary).save(path, format="JPEG", quality=90)
    return path
