"""Naming: dense CLIP features (GEM and the training-free baselines), text embeddings of a vocabulary,
and the rule that names a mask from the similarities inside it."""

from .gem import DensePathConfig, DenseVisionEncoder, SelfSelfAttention
from .mask_labels import MaskLabels, label_masks
from .scorer import GemScorer, ScorerConfig, build_gem_scorer, scorer_config
from .text import DEFAULT_TEMPLATES, encode_vocabulary, validate_vocabulary
from .uncertainty import annotations_review_priority, margin_and_entropy, review_priority
from .vocabulary import (
    BACKGROUND,
    Vocabulary,
    as_vocabulary,
    class_similarity,
    parse_caption_ontology,
    parse_vocabulary,
    parse_yaml_vocabulary,
    read_vocabulary,
)

__all__ = [
    "BACKGROUND",
    "DEFAULT_TEMPLATES",
    "DensePathConfig",
    "DenseVisionEncoder",
    "GemScorer",
    "MaskLabels",
    "ScorerConfig",
    "SelfSelfAttention",
    "Vocabulary",
    "annotations_review_priority",
    "as_vocabulary",
    "build_gem_scorer",
    "class_similarity",
    "encode_vocabulary",
    "label_masks",
    "margin_and_entropy",
    "parse_caption_ontology",
    "parse_vocabulary",
    "parse_yaml_vocabulary",
    "read_vocabulary",
    "review_priority",
    "scorer_config",
    "validate_vocabulary",
]
