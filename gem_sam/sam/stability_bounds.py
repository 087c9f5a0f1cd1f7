"""Which masks can still pass the stability filter, decided from their low-resolution logits.

The stability score of a mask is |logits > t + offset| / |logits > t - offset| over its full-resolution
logits (``calculate_stability_score``), which are bilinear resizes (``align_corners=False``) of the
low-resolution logits: every full-resolution logit is a convex combination of the low-resolution logits
in a small window (1-3 rows by 1-3 columns), so it lies between the window's minimum and maximum. Counting,
for each full-resolution pixel, whether its window's minimum (maximum) clears a level gives the fewest
(most) pixels that can lie above it, at the cost of max- and min-pooling the 256x256 logits instead of
forming the full-resolution ones. A mask whose highest possible score is below the threshold is
dropped before it is upsampled; the rest are upsampled and scored exactly as before.

The windows come from the resize's own index arithmetic (``bilinear_sources``), widened where float32
index arithmetic could round to a neighbouring row, and each level is widened by the logit rounding
(``rounding.LOGIT_ROUNDING``), so a mask is dropped only where the reference's own score lies below the
threshold by more than rounding.

Conventions: logits [m, R, C] cover the top-left R rows and C columns of the low-resolution frame; a
``Sources`` pair (first, last) gives, for each full-resolution row (or column) in order, the first and
last low-resolution row (column) its value reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .rounding import LOGIT_ROUNDING, RATIO_ROUNDING

INDEX_ROUNDING = 1e-4  # how far float32 index arithmetic may move a source position, in source rows
MASKS_PER_CHUNK = 8  # masks bounded at a time (their windows stay in the CPU's cache)


@dataclass(frozen=True)
class Sources:
    """For each output row (or column) of a resize, the first and last source row it reads: two int
    arrays of the output's length."""

    first: np.ndarray
    last: np.ndarray

    def then(self, later: Sources) -> Sources:
        """The sources of ``later``'s outputs through this resize: ``later`` reads this resize's outputs."""
        return Sources(self.first[later.first], self.last[later.last])

    def cut(self, count: int) -> Sources:
        """The first ``count`` outputs only."""
        return Sources(self.first[:count], self.last[:count])


def bilinear_sources(source: int, target: int, *, scale: float | None = None) -> Sources:
    """Rows read by a bilinear resize (``align_corners=False``, no antialiasing) of ``source`` rows to
    ``target`` rows, as PyTorch computes its source positions: (i + 0.5) * scale - 0.5, clamped at 0, with
    scale = 1 / scale_factor where a scale factor is given, else source / target."""
    step = source / target if scale is None else scale
    position = np.maximum((np.arange(target, dtype=np.float64) + 0.5) * step - 0.5, 0.0)
    first = np.floor(np.maximum(position - INDEX_ROUNDING, 0.0)).astype(np.int64)
    last = np.minimum(np.floor(position + INDEX_ROUNDING).astype(np.int64) + 1, source - 1)
    return Sources(np.minimum(first, source - 1), last)


def _window_starts(sources: Sources, size: int) -> tuple[int, torch.Tensor]:
    """One window length L for all outputs (the longest; shorter windows are widened, which only loosens
    the bounds) and how many outputs read the window starting at each row: L and [size - L + 1] float32."""
    length = int((sources.last - sources.first).max()) + 1
    starts = np.minimum(sources.first, size - length)  # a window at the end is widened backwards
    return length, torch.from_numpy(np.bincount(starts, minlength=size - length + 1).astype(np.float32))


def _running_extreme(values: torch.Tensor, length: int, dim: int, *, lowest: bool) -> torch.Tensor:
    """The max (min, ``lowest``) of each ``length`` consecutive entries along ``dim``."""
    pick = torch.minimum if lowest else torch.maximum
    size = values.shape[dim] - length + 1
    out = values.narrow(dim, 0, size)
    for offset in range(1, length):
        out = pick(out, values.narrow(dim, offset, size))
    return out


def count_bounds(
    logits: torch.Tensor, rows: Sources, cols: Sources, *, surely_above: torch.Tensor, possibly_above: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """How many full-resolution pixels surely lie above one level and possibly above another.

    logits [m, R, C] low-resolution; rows, cols: the sources of the H output rows and W output columns;
    surely_above, possibly_above [m]: a level per mask. Returns two [m] float64 pixel counts of the
    H x W full-resolution logits: the pixels whose whole window lies above ``surely_above``, and those
    with any of it above ``possibly_above``.
    """
    row_length, row_counts = _window_starts(rows, logits.shape[1])
    col_length, col_counts = _window_starts(cols, logits.shape[2])
    # Per window row, a float32 sum of column counts is exact below 2**24 columns; rows are summed in float64.
    row_counts, col_counts = row_counts.to(logits.device, torch.float64), col_counts.to(logits.device)
    sure, possible = [], []
    for chunk in torch.arange(len(logits), device=logits.device).split(MASKS_PER_CHUNK):
        for level, lowest, out in ((surely_above, True, sure), (possibly_above, False, possible)):
            extremes = _running_extreme(logits[chunk], row_length, 1, lowest=lowest)
            extremes = _running_extreme(extremes, col_length, 2, lowest=lowest)  # [m, row starts, column starts]
            out.append(((extremes > level[chunk, None, None]).float() @ col_counts).double() @ row_counts)
    return torch.cat(sure), torch.cat(possible)


def may_pass_stability(
    low_res: torch.Tensor,
    rows: Sources,
    cols: Sources,
    *,
    mask_threshold: float,
    offset: float,
    score_threshold: float,
) -> torch.Tensor:
    """low_res [m, R, C] -> bool [m]: False for masks whose stability score, computed on their
    full-resolution logits, is below ``score_threshold`` whatever float rounding does."""
    tolerance = LOGIT_ROUNDING * low_res.abs().flatten(1).amax(dim=1)
    upper, lower = mask_threshold + offset, mask_threshold - offset  # the score's two levels
    # A mask with no logit near the upper level scores 0 / n or 0 / 0 (NaN): it never passes a positive
    # threshold, and needs no counting.
    may_pass = low_res.flatten(1).amax(dim=1) > upper - tolerance
    candidates = may_pass.nonzero()[:, 0]
    if len(candidates):
        fewest_in_union, most_inside = count_bounds(
            low_res[candidates],
            rows,
            cols,
            surely_above=lower + tolerance[candidates],
            possibly_above=upper - tolerance[candidates],
        )
        highest_score = torch.where(
            fewest_in_union > 0, most_inside / fewest_in_union.clamp(min=1), (most_inside > 0).double()
        )
        may_pass[candidates] = highest_score >= score_threshold - RATIO_ROUNDING
    return may_pass
