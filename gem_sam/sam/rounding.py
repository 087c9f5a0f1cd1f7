"""What "within float rounding" means for SAM's mask logits and scores.

Two correct float32 implementations of SAM's decoder (ours and the reference's, or the reference on
two CPUs whose kernels sum in another order) give logits that differ by rounding. A logit is the end of
a long chain of float32 sums (the two-way transformer, the hypernetwork products, the upscaling and the
bilinear resizes), whose terms are of the size of the mask's largest logits, so its rounding error scales
with the mask's largest |logit|, not with its own value: a logit near the threshold carries the error of
the large terms that cancelled to give it.

``LOGIT_ROUNDING`` is that error bound as a share of the mask's largest |logit|: 2e-5, about 170 float32
ulps (2**-23 = 1.2e-7 each). Measured between ours and the reference (random-init SAM ViT tiny and
Hiera-T, three photos, every logit of a 6x6 grid's masks) the largest difference was 2.5e-6 of the
mask's largest |logit|, the same with the AVX-512, AVX2 and default ATen kernels and with one thread, so
the bound leaves a margin of 8x. A trained SAM's logits reach about +-30, so a pixel is "within rounding"
of the threshold when its logit is within about 6e-4 of it: a pixel deep inside a mask, or a mask's
boundary moved by a pixel, lies far outside that.

``SCORE_ROUNDING`` bounds the difference of two predicted IoUs (measured: about 1e-6).
"""

from __future__ import annotations

import torch

LOGIT_ROUNDING = 2e-5  # rounding of a mask logit, as a share of the mask's largest |logit|
SCORE_ROUNDING = 1e-4  # largest |difference| of two predicted IoUs that counts as rounding
RATIO_ROUNDING = 1e-6  # float32 rounding of a ratio of pixel counts (stability score, box IoU)


def logit_tolerance(logits: torch.Tensor) -> torch.Tensor:
    """logits [..., H, W] of one mask per leading index -> [..., 1, 1]: how far a logit may move by
    rounding (``LOGIT_ROUNDING`` times the mask's largest |logit|)."""
    return LOGIT_ROUNDING * logits.abs().amax(dim=(-2, -1), keepdim=True)


def rounding_band(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """logits [..., H, W] -> bool [..., H, W]: pixels whose logit lies within rounding of ``threshold``,
    so that another correct implementation may put them on the other side."""
    return (logits - threshold).abs() <= logit_tolerance(logits)


def stability_range(logits: torch.Tensor, threshold: float, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest stability score that logits [N, H, W] can give once every logit within
    rounding of ``threshold + offset`` or ``threshold - offset`` may fall on either side. Returns two [N]
    float64 tensors; (nan, nan) where no logit can exceed ``threshold - offset`` (the score is 0/0).

    The stability score is |logits > threshold + offset| / |logits > threshold - offset|
    (``calculate_stability_score``)."""
    tolerance = logit_tolerance(logits)
    upper, lower = threshold + offset, threshold - offset  # as the reference forms them

    def counts(level: float) -> tuple[torch.Tensor, torch.Tensor]:
        sure = (logits > level + tolerance).flatten(1).sum(dim=1).double()
        maybe = ((logits - level).abs() <= tolerance).flatten(1).sum(dim=1).double()
        return sure, maybe

    sure_in, maybe_in = counts(upper)
    sure_union, maybe_union = counts(lower)
    low = sure_in / (sure_union + maybe_union)
    high = torch.where(sure_union > 0, (sure_in + maybe_in) / sure_union.clamp(min=1), torch.ones_like(sure_in))
    empty = (sure_union + maybe_union) == 0
    low[empty], high[empty] = float("nan"), float("nan")
    return low, high.clamp(max=1.0)


def differing_pixels(mask: torch.Tensor, reference_logits: torch.Tensor, threshold: float) -> tuple[int, int]:
    """mask [H, W] bool against the reference's logits [H, W]: (pixels that differ from
    ``reference_logits > threshold`` where the reference's logit is within rounding of the threshold,
    pixels that differ elsewhere). Only the second count is a difference the criterion does not explain."""
    differ = mask != (reference_logits > threshold)
    band = rounding_band(reference_logits, threshold)
    return int((differ & band).sum()), int((differ & ~band).sum())
