"""Naming a track once for its whole life, from GEM over the frames where it is seen.

On each naming frame (every keyframe, and every ``name_every`` frames when set), GEM's similarity with
every prompt is pooled inside each track's mask, exactly as for an image, and turned into class
similarities (a class's best prompt; the background prompts' best as the background's). A track's class
similarities are averaged over its naming frames; then the image rule applies: the softmax of the logit
scale times them, over the classes and the background, gives its class, score, margin and entropy. A
track the background wins is dropped, and so is one whose score is below ``min_score``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..mask_ops import pool_in_masks
from ..naming.mask_labels import MaskLabels, label_class_similarities, prompt_groups
from ..naming.vocabulary import Vocabulary, class_similarity


@dataclass
class NamingSums:
    """A track's class and prompt similarities summed over its naming frames."""

    classes: np.ndarray  # [G] float64
    prompts: np.ndarray  # [P] float64
    frames: int

    def to_json(self) -> dict:
        return {"classes": self.classes.tolist(), "prompts": self.prompts.tolist(), "frames": self.frames}

    @classmethod
    def from_json(cls, data: dict) -> NamingSums:
        return cls(np.asarray(data["classes"]), np.asarray(data["prompts"]), int(data["frames"]))

    def __add__(self, other: NamingSums) -> NamingSums:
        return NamingSums(self.classes + other.classes, self.prompts + other.prompts, self.frames + other.frames)


def frame_similarities(
    similarity: torch.Tensor, masks: Mapping[int, np.ndarray], vocabulary: Vocabulary
) -> dict[int, NamingSums]:
    """similarity [P, h, w] (GEM's, of one frame), {track id: [H, W] bool} -> each track's sums for this
    frame."""
    if not masks:
        return {}
    ids = sorted(masks)
    pooled = pool_in_masks(similarity, torch.from_numpy(np.stack([masks[i] for i in ids])))  # [T, P]
    prompt_class, _, n_groups = prompt_groups(pooled.shape[1], vocabulary)
    grouped = class_similarity(pooled, prompt_class, n_groups)  # [T, G]
    return {
        track_id: NamingSums(grouped[row].double().numpy(), pooled[row].double().numpy(), 1)
        for row, track_id in enumerate(ids)
    }


def name_tracks(
    sums: Mapping[int, NamingSums], vocabulary: Vocabulary, *, logit_scale: float, min_score: float = 0.0
) -> tuple[list[int], MaskLabels]:
    """Track ids (ascending) and their names from their summed similarities (see the module docstring)."""
    ids = sorted(sums)
    prompt_class, n_classes, _ = prompt_groups(len(vocabulary.all_prompts), vocabulary)
    if not ids:
        empty = torch.zeros(0, len(vocabulary.all_prompts))
        return [], label_class_similarities(
            torch.zeros(0, 1), empty, prompt_class=prompt_class, n_classes=n_classes, logit_scale=logit_scale
        )
    grouped = torch.tensor(np.stack([sums[i].classes / sums[i].frames for i in ids]), dtype=torch.float32)
    pooled = torch.tensor(np.stack([sums[i].prompts / sums[i].frames for i in ids]), dtype=torch.float32)
    labels = label_class_similarities(
        grouped, pooled, prompt_class=prompt_class, n_classes=n_classes, logit_scale=logit_scale, min_score=min_score
    )
    return ids, labels
