"""Masks as polygons: outer boundaries from OpenCV contours, in COCO pixel coordinates.

Coordinates are continuous (x, y) with pixel (row i, col j) covering [j, j + 1) x [i, i + 1). The
contour is traced on the mask upsampled twice (each pixel a 2x2 block), so its vertices lie a quarter
pixel inside the mask's outer edges: rasterising the polygon with pycocotools (COCO's own rasteriser)
or with ``cv2.fillPoly`` on the floored coordinates (as Ultralytics does) gives the mask back exactly
when it has no holes. Holes cannot be drawn by a COCO polygon or a YOLO outline; they are filled.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

UPSAMPLING = 2  # contour traced at twice the resolution: vertices a quarter pixel inside the edges
DEFAULT_MIN_POLYGON_AREA = 10.0  # square pixels: smaller pieces are dropped by the polygon exports


def polygon_area(polygon: np.ndarray) -> float:
    """Shoelace area of a closed polygon [K, 2] (x, y), in square pixels."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def mask_to_polygons(mask: np.ndarray, *, min_area: float = 0.0) -> list[np.ndarray]:
    """Outer boundary of each piece (8-connected) of an [H, W] bool mask: polygons [K, 2] float64
    (x, y). Pieces whose polygon area is below ``min_area`` square pixels are dropped; holes are filled.
    Largest piece first."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    top, left = int(rows[0]), int(cols[0])
    crop = mask[top : rows[-1] + 1, left : cols[-1] + 1].astype(np.uint8)
    upsampled = np.repeat(np.repeat(crop, UPSAMPLING, axis=0), UPSAMPLING, axis=1)
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([left, top], dtype=np.float64)
    polygons = [(contour[:, 0, :].astype(np.float64) + 0.5) / UPSAMPLING + offset for contour in contours]
    polygons = [polygon for polygon in polygons if len(polygon) >= 3 and polygon_area(polygon) >= min_area]
    return sorted(polygons, key=polygon_area, reverse=True)


def rasterize_coco_polygons(polygons: list[np.ndarray], size_hw: tuple[int, int]) -> dict:
    """The COCO RLE that pycocotools makes of these polygons (their union)."""
    height, width = size_hw
    rles = mask_utils.frPyObjects([polygon.ravel().tolist() for polygon in polygons], height, width)
    return mask_utils.merge(rles)


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1).min())


def chain_nearest(polygons: list[np.ndarray]) -> list[np.ndarray]:
    """Order pieces from the first one, each followed by the nearest remaining piece (short bridges)."""
    ordered, remaining = [polygons[0]], list(polygons[1:])
    while remaining:
        nearest = min(range(len(remaining)), key=lambda i: _gap(ordered[-1], remaining[i]))
        ordered.append(remaining.pop(nearest))
    return ordered


def join_pieces(polygons: list[np.ndarray]) -> np.ndarray:
    """One outline [K, 2] through all pieces, for formats with one polygon per instance (YOLO).

    Consecutive pieces are joined at their closest vertices by a bridge that the outline walks there
    and back, so the bridges enclose no area: the outline goes around piece 0 from its exit to piece 1,
    enters piece 1, walks part of it to the exit to piece 2, ..., goes all the way around the last
    piece, and walks back completing each piece's loop.
    """
    if len(polygons) == 1:
        return polygons[0]
    polygons = chain_nearest(polygons)
    # closest vertex pair between consecutive pieces: exits[i] on piece i, entries[i + 1] on piece i + 1
    exits, entries = [0] * len(polygons), [0] * len(polygons)
    for i in range(len(polygons) - 1):
        distances = ((polygons[i][:, None, :] - polygons[i + 1][None, :, :]) ** 2).sum(axis=-1)
        exits[i], entries[i + 1] = np.unravel_index(int(distances.argmin()), distances.shape)

    def arc(piece: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Vertices from ``start`` forward around the piece to ``stop``, both included; all the way
        around (back to ``start``) when they are the same vertex."""
        length = (stop - start) % len(piece) or len(piece)
        return piece[(start + np.arange(length + 1)) % len(piece)]

    forward = [arc(polygons[0], exits[0], exits[0])]
    for i in range(1, len(polygons) - 1):
        forward.append(arc(polygons[i], entries[i], exits[i]))
    forward.append(arc(polygons[-1], entries[-1], entries[-1]))
    # back through the middle pieces, completing each loop (nothing left where entry == exit)
    backward = [
        arc(polygons[i], exits[i], entries[i]) if exits[i] != entries[i] else polygons[i][exits[i] : exits[i] + 1]
        for i in range(len(polygons) - 2, 0, -1)
    ]
    return np.concatenate(forward + backward)
