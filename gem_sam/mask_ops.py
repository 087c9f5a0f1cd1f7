"""Pure mask and score math: RLE helpers, exact in-mask pooling of upsampled maps, min-max.

Conventions: masks are [H, W] (or [M, H, W]) boolean arrays in image pixels, row = y, col = x;
boxes named ``*_xywh`` are [x, y, width, height] in pixels; similarity maps are [C, h, w].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

CHUNK_BUDGET_BYTES = 256 * 2**20  # full-resolution float work per chunk of masks


def masks_per_chunk(size_hw: tuple[int, int], *, most: int = 16) -> int:
    """How many full-resolution float32 masks of ``size_hw`` fit the chunk budget (1 to ``most``)."""
    return max(1, min(most, CHUNK_BUDGET_BYTES // (4 * size_hw[0] * size_hw[1])))


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """[H, W] bool -> COCO RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (``counts`` str or bytes) -> [H, W] bool."""
    return mask_utils.decode(compressed_rle(rle)).astype(bool)


def compressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """A COCO RLE with ``counts`` as bytes, as pycocotools' C functions take it."""
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE."""
    return int(mask_utils.area(compressed_rle(rle)))


def rle_bbox_xywh(rle: dict[str, Any]) -> list[float]:
    """COCO box [x, y, w, h] of a COCO RLE: the pixel extent (a full 512x512 mask is 512x512)."""
    return [float(v) for v in mask_utils.toBbox(compressed_rle(rle))]


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    """Tight box [x, y, w, h] around the foreground, in pixels (COCO convention); zeros if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def sam_bbox_xywh(mask: np.ndarray) -> list[int]:
    """SAM's box [x, y, w, h] of the foreground, as its generators record it: the inclusive right and
    bottom pixel indices minus the left and top (``batched_mask_to_box`` + ``box_xyxy_to_xywh``), so a
    one-pixel mask is 0 wide; zeros if empty."""
    box = mask_bbox_xywh(mask)
    return [int(box[0]), int(box[1]), max(0, int(box[2]) - 1), max(0, int(box[3]) - 1)]


def linear_upsampling_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """[out_size, in_size] matrix U with ``U @ v`` = 1-D linear resize of v (align_corners=False).

    Bilinear resizing of a map S [h, w] to [H, W] is ``U_H @ S @ U_W.T`` (it is separable), which is
    what ``F.interpolate(..., mode="bilinear", align_corners=False)`` computes.
    """
    identity = torch.eye(in_size, dtype=torch.float64)[None]  # [1, in, in]: each column a basis vector
    return F.interpolate(identity, size=out_size, mode="linear", align_corners=False)[0].T.float()


def mask_pooling_weights(masks: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Weights W [M, h, w] such that the mean of a bilinearly upsampled map inside mask m is
    ``(W[m] * S).sum()`` for any S [h, w].

    masks: [M, H, W] bool in image pixels. Empty masks get zero weights.
    """
    _, height, width = masks.shape
    rows = linear_upsampling_matrix(height, grid_hw[0]).to(masks.device)  # [H, h]
    cols = linear_upsampling_matrix(width, grid_hw[1]).to(masks.device)  # [W, w]
    per_row = masks.float() @ cols  # [M, H, w]
    weights = torch.einsum("Hh,mHw->mhw", rows, per_row)  # [M, h, w]
    area = masks.flatten(1).sum(dim=1).clamp(min=1).float()  # [M]
    return weights / area[:, None, None]


def pool_in_masks(similarity: torch.Tensor, masks: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """Mean of each class map, bilinearly upsampled to the masks' size, inside each mask.

    similarity: [C, h, w]; masks: [M, H, W] bool. Returns [M, C] float32. Exact, without building
    the [C, H, W] upsampled maps; masks are processed ``chunk`` at a time to bound memory
    (default: as many as fit ``CHUNK_BUDGET_BYTES``).
    """
    grid_hw = (similarity.shape[1], similarity.shape[2])
    chunk = chunk or masks_per_chunk(tuple(masks.shape[1:]))
    out = []
    for start in range(0, masks.shape[0], chunk):
        weights = mask_pooling_weights(masks[start : start + chunk].to(similarity.device), grid_hw)
        out.append(torch.einsum("mhw,chw->mc", weights, similarity.float()))
    if not out:
        return torch.zeros(0, similarity.shape[0])
    return torch.cat(out)


def decoded_mask_chunks(
    records: Sequence[dict[str, Any]], *, size_hw: tuple[int, int]
) -> Iterator[tuple[Sequence[dict[str, Any]], torch.Tensor]]:
    """Yield (records, masks [m, H, W] bool) for consecutive chunks of mask records, decoding only as
    many full-resolution masks at a time as ``masks_per_chunk`` allows."""
    step = masks_per_chunk(size_hw)
    for start in range(0, len(records), step):
        chunk = records[start : start + step]
        yield chunk, torch.from_numpy(np.stack([decode_rle(record["segmentation"]) for record in chunk]))


def min_max_scale(maps: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Scale each map [..., H, W] to [0, 1] by its own min and max; a constant map becomes 0."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values[..., None]
    high = flat.max(dim=-1, keepdim=True).values[..., None]
    return (maps - low) / (high - low).clamp(min=eps)
