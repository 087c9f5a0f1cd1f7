"""Naming masks: pool each class's similarity inside a mask, pick the best class, score it.

The score of a mask is the softmax over the vocabulary of its pooled similarities times the
model's logit scale (100 for CLIP), read at the chosen class: the probability that the model gives
that name among the vocabulary's names. With a one-word vocabulary it is always 1. Masks whose score
is below ``min_score`` are marked to drop (default 0: every mask is kept and named).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskLabels:
    """Per-mask names and scores; tensors of length M (masks)."""

    class_index: torch.Tensor  # [M] int64, index into the vocabulary
    score: torch.Tensor  # [M] float32, softmax probability of that class
    similarity: torch.Tensor  # [M] float32, pooled similarity of that class (the best over the vocabulary)
    keep: torch.Tensor  # [M] bool, score >= min_score


def label_masks(pooled: torch.Tensor, *, logit_scale: float, min_score: float = 0.0) -> MaskLabels:
    """pooled: [M, C] mean similarity of each class inside each mask -> best class and score."""
    probabilities = (pooled.float() * logit_scale).softmax(dim=-1)  # [M, C]
    score, class_index = (
        probabilities.max(dim=-1) if pooled.shape[0] else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    )
    similarity = pooled.float().gather(1, class_index[:, None])[:, 0] if pooled.shape[0] else torch.zeros(0)
    return MaskLabels(class_index=class_index, score=score, similarity=similarity, keep=score >= min_score)
