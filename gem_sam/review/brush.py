"""Masks in Label Studio's formats: brush regions (its own RLE, through the Label Studio SDK's
converter) and polygon regions (points in percent of the image's width and height).

Label Studio's brush RLE encodes an RGBA image, row-major, four bytes a pixel; a region's mask is the
alpha channel. The SDK is optional: ``pip install "gem_sam[label-studio]"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def _brush_module():  # noqa: ANN202 - the SDK's converter module
    try:
        from label_studio_sdk.converter import brush
    except ImportError as error:
        raise ImportError(
            "Label Studio's brush format needs the Label Studio SDK: pip install 'gem_sam[label-studio]'"
        ) from error
    return brush


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """[H, W] bool -> Label Studio brush RLE (a list of ints), with the SDK's encoder."""
    return [int(value) for value in _brush_module().mask2rle(mask.astype(np.uint8) * 255)]


def brush_rle_to_mask(rle: Sequence[int], size_hw: tuple[int, int]) -> np.ndarray:
    """Label Studio brush RLE -> [H, W] bool (alpha above 0), with the SDK's decoder. Raises
    ``ValueError`` when the RLE does not hold an RGBA image of ``size_hw``."""
    height, width = size_hw
    values = _brush_module().decode_rle(list(rle))
    if values.size != height * width * 4:
        raise ValueError(f"a brush RLE of {values.size} values does not fit an RGBA image of {width}x{height}")
    return values.reshape(height, width, 4)[:, :, 3] > 0


def polygon_to_mask(points_percent: Sequence[Sequence[float]], size_hw: tuple[int, int]) -> np.ndarray:
    """Polygon points ``[[x%, y%], ...]`` (percent of width and height, Label Studio's convention) ->
    [H, W] bool, rasterised as COCO rasterises polygons (pycocotools)."""
    height, width = size_hw
    if len(points_percent) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points_percent)}")
    flat = [value for x, y in points_percent for value in (x * width / 100.0, y * height / 100.0)]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
    return mask_utils.decode(rle).astype(bool)
