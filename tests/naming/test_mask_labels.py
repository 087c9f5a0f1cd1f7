"""Naming and scoring masks, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from gem_sam.labelling.config import LabelConfig
from gem_sam.naming.mask_labels import label_masks


def test_best_class_and_softmax_score_by_hand() -> None:
    pooled = torch.tensor([[0.20, 0.25, 0.10], [0.30, 0.10, 0.10]])
    labels = label_masks(pooled, logit_scale=100.0)
    assert labels.class_index.tolist() == [1, 0]
    # mask 0: exp(25) / (exp(20) + exp(25) + exp(10))
    expected0 = 1.0 / (math.exp(-5) + 1.0 + math.exp(-15))
    expected1 = 1.0 / (1.0 + 2 * math.exp(-20))
    assert labels.score.tolist() == pytest.approx([expected0, expected1], abs=1e-6)
    assert labels.keep.tolist() == [True, True]


def test_min_score_drops_uncertain_masks() -> None:
    pooled = torch.tensor([[0.20, 0.20], [0.30, 0.10]])  # first: a tie, probability 0.5
    labels = label_masks(pooled, logit_scale=100.0, min_score=0.6)
    assert labels.keep.tolist() == [False, True]


def test_single_class_vocabulary_scores_one() -> None:
    assert label_masks(torch.tensor([[0.1], [-0.3]]), logit_scale=100.0).score.tolist() == [1.0, 1.0]


def test_no_masks() -> None:
    labels = label_masks(torch.zeros(0, 3), logit_scale=100.0)
    assert labels.class_index.shape == (0,) and labels.keep.shape == (0,)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_min_score_must_be_a_probability(bad: float) -> None:
    with pytest.raises(ValueError, match="min_score"):
        LabelConfig(min_score=bad)
