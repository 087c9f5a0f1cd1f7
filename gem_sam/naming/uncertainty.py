"""How sure a mask's name is, and which images a reviewer should see first.

Per mask, from its class distribution (the softmax over the classes and, with background prompts, the
background, as ``mask_labels.label_masks`` computes it):

- **margin**: the best class's probability minus the second best's, in [0, 1]; 0 is a tie, and a
  vocabulary of one class (no background) has margin 1;
- **entropy**: -sum p ln p, in nats, from 0 (one class has it all) to ln G for G classes.

Per image, the **review priority** in [0, 1]::

    u_m = 1 - margin_m            (how unsure mask m is: 1 at a tie)
    priority = sum_m a_m u_m^2 / sum_m a_m u_m

with a_m the mask's area: the mean uncertainty of the image's masks, each weighted by its area times its
own uncertainty. Area times uncertainty is the mask's share of the labelled pixels a reviewer may have to
relabel, so the priority is how unsure the masks are that hold the image's reviewing work: its least
sure masks, weighted by area. Sure masks get no weight, so one unsure mask is not diluted by many sure
ones (as a plain mean would); a large unsure mask outweighs an unsure speck; and an image whose masks
are all equally unsure has that uncertainty. An image without masks, or with only sure ones, has 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def margin_and_entropy(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """probabilities [M, G] (rows sum to 1) -> margin [M] and entropy [M] (nats), float32."""
    probabilities = probabilities.float()
    if probabilities.shape[1] == 1:
        margin = torch.ones(probabilities.shape[0])
    else:
        top = probabilities.topk(2, dim=1).values  # [M, 2]
        margin = top[:, 0] - top[:, 1]
    entropy = -(probabilities * probabilities.clamp(min=1e-30).log()).sum(dim=1)  # 0 log 0 = 0
    return margin, entropy.clamp(min=0.0)


def review_priority(margins: Sequence[float], areas: Sequence[float]) -> float:
    """An image's review priority from its masks' margins and areas (see the module docstring)."""
    if len(margins) != len(areas):
        raise ValueError(f"{len(margins)} margins but {len(areas)} areas")
    weight = total = 0.0
    for margin, area in zip(margins, areas, strict=True):
        unsure = min(max(1.0 - float(margin), 0.0), 1.0)
        weight += float(area) * unsure
        total += float(area) * unsure * unsure
    return total / weight if weight > 0 else 0.0


def annotations_review_priority(annotations: Sequence[Mapping[str, Any]]) -> float:
    """``review_priority`` of an image's annotations (each with ``area`` and ``margin``; annotations of
    files written before margins existed use their ``score`` instead)."""
    margins = [annotation.get("margin", annotation["score"]) for annotation in annotations]
    return review_priority(margins, [annotation["area"] for annotation in annotations])
