"""CLIP Surgery's feature surgery: similarities without the part that every class shares.

CLIP Surgery (Li et al., 2023, eq. 4) multiplies each patch feature element-wise with each class's
text embedding, weights the class by how strongly the whole image matches it, and removes the mean
over classes ("redundant features") before summing over channels. Summed over channels, that is::

    s[n, c] = f_n . t_c                          cosine similarity of patch n with class c
    w[c]    = p[c] / mean(p),  p = softmax(2 * g . t)   g: the image embedding
    out[n, c] = w[c] s[n, c] - mean_c'(w[c'] s[n, c'])

With one class the mean over classes is that class itself and every value would be 0; CLIP
Surgery then removes the embedding of the empty prompt instead: ``out[n] = f_n . (t - t_empty)``.
"""

from __future__ import annotations

import torch


def feature_surgery(
    patch_features: torch.Tensor,
    image_embedding: torch.Tensor,
    text: torch.Tensor,
    *,
    empty_text: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feature-surgery similarity of every patch with every class.

    patch_features: [B, h, w, E] L2-normalised; image_embedding: [B, E] L2-normalised; text: [C, E]
    L2-normalised; empty_text: [E], the empty prompt's embedding, needed when C == 1.
    Returns [B, C, h, w] float32.
    """
    similarity = torch.einsum("bhwe,ce->bchw", patch_features, text)  # [B, C, h, w]
    if text.shape[0] == 1:
        if empty_text is None:
            raise ValueError("feature surgery of a single class needs the empty prompt's embedding")
        return torch.einsum("bhwe,ce->bchw", patch_features, text - empty_text[None])
    probability = (2 * image_embedding @ text.T).softmax(dim=-1)  # [B, C]
    weights = probability / probability.mean(dim=-1, keepdim=True)  # [B, C]
    weighted = similarity * weights[:, :, None, None]  # [B, C, h, w]
    return weighted - weighted.mean(dim=1, keepdim=True)
