"""Naming masks: pool each prompt's similarity inside a mask, take each class's best prompt, pick the
best class, score it.

A class's similarity inside a mask is the maximum over its prompts' pooled similarities. The score
of a mask is the softmax, over the classes and (when the vocabulary has background prompts) the
background, of the logit scale (100 for CLIP) times the class similarities, read at the chosen
class: the probability the model gives that name among the vocabulary's names. With a one-class
vocabulary and no background it is always 1. The same distribution gives each mask's margin and
entropy (``uncertainty``), background counted as a class. Masks that the background wins are marked,
and so are masks whose score is below ``min_score``; neither is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .uncertainty import margin_and_entropy
from .vocabulary import Vocabulary, class_similarity


@dataclass(frozen=True)
class MaskLabels:
    """Per-mask names and scores; tensors of length M (masks)."""

    class_index: torch.Tensor  # [M] int64, index into the classes (len(classes) where background won)
    score: torch.Tensor  # [M] float32, softmax probability of that class
    similarity: torch.Tensor  # [M] float32, pooled similarity of that class (its best prompt's)
    prompt_index: torch.Tensor  # [M] int64, the winning prompt, an index into ``Vocabulary.all_prompts``
    background: torch.Tensor  # [M] bool, a background prompt won
    keep: torch.Tensor  # [M] bool, not background and score >= min_score
    margin: torch.Tensor  # [M] float32, best minus second-best probability (``uncertainty``)
    entropy: torch.Tensor  # [M] float32, entropy of the class distribution, nats


def label_masks(
    pooled: torch.Tensor, *, logit_scale: float, vocabulary: Vocabulary | None = None, min_score: float = 0.0
) -> MaskLabels:
    """pooled: [M, P] mean similarity of each prompt inside each mask (P = ``len(vocabulary.all_prompts)``;
    without a vocabulary, one prompt per class) -> best class, its score and whether it is kept."""
    pooled = pooled.float()
    prompt_class, n_classes, n_groups = prompt_groups(pooled.shape[1], vocabulary)
    grouped = class_similarity(pooled, prompt_class, n_groups)  # [M, G]
    return label_class_similarities(
        grouped, pooled, prompt_class=prompt_class, n_classes=n_classes, logit_scale=logit_scale, min_score=min_score
    )


def prompt_groups(n_prompts: int, vocabulary: Vocabulary | None) -> tuple[torch.Tensor, int, int]:
    """[P] the group of each prompt, the number of classes and of groups (classes, plus background when
    the vocabulary has background prompts)."""
    if vocabulary is None:
        return torch.arange(n_prompts), n_prompts, n_prompts
    prompt_class, n_classes = vocabulary.prompt_class, len(vocabulary.classes)
    if len(prompt_class) != n_prompts:
        raise ValueError(f"pooled has {n_prompts} prompts, the vocabulary {len(prompt_class)}")
    return prompt_class, n_classes, n_classes + (1 if vocabulary.background else 0)


def label_class_similarities(
    grouped: torch.Tensor,
    pooled: torch.Tensor,
    *,
    prompt_class: torch.Tensor,
    n_classes: int,
    logit_scale: float,
    min_score: float = 0.0,
) -> MaskLabels:
    """The naming rule from class similarities: grouped [M, G] (each class's, and the background's,
    similarity), pooled [M, P] the prompts' (for the winning prompt) -> ``MaskLabels``. A video track is
    named from its class similarities averaged over frames the same way."""
    n_masks = grouped.shape[0]
    if n_masks == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return MaskLabels(
            empty, torch.zeros(0), torch.zeros(0), empty, empty.bool(), empty.bool(), torch.zeros(0), torch.zeros(0)
        )
    probabilities = (grouped * logit_scale).softmax(dim=-1)  # [M, G], background a class of its own
    score, class_index = probabilities.max(dim=-1)  # [M], [M]
    margin, entropy = margin_and_entropy(probabilities)
    similarity = grouped.gather(1, class_index[:, None])[:, 0]
    # the winning prompt: the best prompt among those of the winning class
    of_winner = prompt_class.to(pooled.device)[None, :] == class_index[:, None]  # [M, P]
    prompt_index = pooled.masked_fill(~of_winner, float("-inf")).argmax(dim=-1)
    background = class_index == n_classes
    return MaskLabels(
        class_index=class_index,
        score=score,
        similarity=similarity,
        prompt_index=prompt_index,
        background=background,
        keep=~background & (score >= min_score),
        margin=margin,
        entropy=entropy,
    )
