"""Object-like masks on real photos, for tests where mask shapes matter (polygons, overlaps).

A random-init SAM gives speckled masks; these come from a graph-based segmentation of the photo
(scikit-image's Felzenszwalb), with holes filled, and include overlapping unions of neighbouring
regions and one mask in two pieces. ``RegionMaskGenerator`` has the mask generator's ``generate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from gem_sam.mask_ops import encode_rle, mask_bbox_xywh


def region_masks(image_rgb: np.ndarray, *, most: int = 10, min_pixels: int = 150) -> list[np.ndarray]:
    """[H, W] bool masks: the largest regions, unions of touching pairs, and one two-piece mask."""
    segments = felzenszwalb(image_rgb, scale=300, sigma=0.8, min_size=60)
    regions = [ndimage.binary_fill_holes(segments == label) for label in np.unique(segments)]
    regions = [region for region in regions if region.sum() >= min_pixels and ndimage.label(region)[1] == 1]
    regions.sort(key=lambda region: -int(region.sum()))
    regions = regions[:most]
    masks = list(regions)
    for i, a in enumerate(regions):
        for b in regions[i + 1 :]:
            if (ndimage.binary_dilation(a) & b).any():
                masks.append(ndimage.binary_fill_holes(a | b))  # overlaps both parts
                break
    apart = [
        (a, b)
        for i, a in enumerate(regions)
        for b in regions[i + 1 :]
        if not (ndimage.binary_dilation(a, iterations=3) & b).any()
    ]
    if apart:
        masks.append(apart[0][0] | apart[0][1])  # one instance in two pieces
    return masks


class RegionMaskGenerator:
    """Mask records in the format of ``GridMaskGenerator.generate``, from ``region_masks``."""

    def generate(self, image_rgb: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "segmentation": encode_rle(mask),
                "area": int(mask.sum()),
                "bbox": mask_bbox_xywh(mask),
                "predicted_iou": 0.9,
                "point_coords": [[0.0, 0.0]],
                "stability_score": 0.96,
                "crop_box": [0, 0, image_rgb.shape[1], image_rgb.shape[0]],
            }
            for mask in region_masks(image_rgb)
        ]
