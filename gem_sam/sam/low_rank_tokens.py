"""Many prompts' image tokens held as shared matrices plus small per-prompt factors.

In SAM's two-way transformer all prompts of an image start from the same N image tokens. The tokens
then change only through

* image-to-token attention, whose output at each image token is, per head, a convex mix of the
  prompt's T token values: a rank <= T x heads update ``U @ R`` (U: attention weights, R: the token
  values pushed through the output projection) plus the output bias;
* LayerNorm: a per-token shift and scale, then a per-channel affine map shared by all tokens.

So for prompt p the C-channel tokens are::

    X[p] = sum_i  s_i[p] * S_i  +  sum_b  U_b[p] @ R_b[p]

with ``S_i`` shared by all prompts ([N, C], or [1, C] for a row repeated on every token), ``s_i[p]`` a
per-token scale ([N], or 1), ``U_b[p]`` [N, r] attention weights and ``R_b[p]`` [r, C] rows. Attention
needs projections of X only contracted with a prompt's few queries, and LayerNorm needs only each
token's mean and variance; both follow from products of the small factors with the shared matrices,
so the [P, N, C] tensor is formed only for the prompts whose masks are wanted (``materialize``).
Everything computed from the shared matrices alone is kept in a ``SharedCache`` and reused by every
chunk of prompts of the image.

The variance is expanded into sums of products, so results equal the dense computation up to float32
rounding (about 1e-6 relative); run it in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import nn


class SharedCache:
    """Prompt-independent tensors by key (a description of how each was derived)."""

    def __init__(self) -> None:
        self._values: dict[Hashable, torch.Tensor] = {}

    def get(self, key: Hashable, compute: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        """The tensor under ``key``, computed as ``compute(*args)`` the first time."""
        if key not in self._values:
            self._values[key] = compute(*args)
        return self._values[key]


@dataclass(frozen=True)
class SharedTerm:
    """``scale[..., None] * base``: base [N, C] or [1, C] is shared and named by ``key`` in the cache;
    scale [P, N] per prompt and token, or None for 1."""

    base: torch.Tensor
    key: Hashable
    scale: torch.Tensor | None = None


@dataclass(frozen=True)
class HeadBlock:
    """``weights @ rows``: an attention output without its bias.

    weights: [P, N, H*T] (head-major); row (h, t) = ``coefficients[:, t, h] @ basis[h]`` with
    coefficients [P, T, H, d] (the prompt's token values per head) and basis [H, d, C] shared, named
    by ``key`` (the output projection, transformed by every later LayerNorm).
    """

    weights: torch.Tensor
    coefficients: torch.Tensor
    basis: torch.Tensor
    key: Hashable

    def rows(self) -> torch.Tensor:
        """[P, H*T, C]."""
        prompts, tokens, heads, _ = self.coefficients.shape
        rows = torch.einsum("pthd,hdc->phtc", self.coefficients, self.basis)
        return rows.reshape(prompts, heads * tokens, self.basis.shape[-1])

    def take(self, indexes: torch.Tensor, *, basis: torch.Tensor | None = None) -> HeadBlock:
        """The block of the prompts at ``indexes``, optionally with another basis [H, d, K]."""
        return HeadBlock(
            self.weights[indexes], self.coefficients[indexes], self.basis if basis is None else basis, self.key
        )


def _head_dot(shared: torch.Tensor, per_prompt: torch.Tensor) -> torch.Tensor:
    """shared [N, H, d] . per_prompt [P, T, H, d] over d -> contiguous [P, N, H, T]."""
    prompts, tokens, heads, head_dim = per_prompt.shape
    per_head = per_prompt.permute(2, 3, 0, 1).reshape(heads, head_dim, prompts * tokens)
    product = shared.transpose(0, 1) @ per_head  # [H, N, P*T]
    out = product.new_empty(prompts, shared.shape[0], heads, tokens)
    return out.copy_(product.view(heads, -1, prompts, tokens).permute(2, 1, 0, 3))


def _project(matrix: torch.Tensor, weight: torch.Tensor, heads: int) -> torch.Tensor:
    """matrix [M, C] @ weight [H*d, C]^T, split into heads: [M, H, d]."""
    return (matrix @ weight.T).view(matrix.shape[0], heads, -1)


def _centre(matrix: torch.Tensor) -> torch.Tensor:
    """Rows of matrix [..., C] minus their mean over channels."""
    return matrix - matrix.mean(-1, keepdim=True)


def _times(scale: torch.Tensor | None, factor: torch.Tensor) -> torch.Tensor:
    """scale [P, N] (None: 1) times a per-token factor [P, N]."""
    return factor if scale is None else scale * factor


class LowRankTokens:
    """Per-prompt image tokens ``X[p]`` [N, C] as shared terms plus attention blocks (module docstring)."""

    def __init__(self, terms: list[SharedTerm], blocks: list[HeadBlock], cache: SharedCache) -> None:
        self.terms = terms
        self.blocks = blocks
        self.cache = cache

    @classmethod
    def shared(cls, tokens: torch.Tensor, *, key: Hashable, cache: SharedCache) -> LowRankTokens:
        """The same tokens [N, C] for every prompt."""
        return cls([SharedTerm(tokens, key)], [], cache)

    def plus(self, shared: torch.Tensor, *, key: Hashable) -> LowRankTokens:
        """``X + shared`` for shared [N, C] or [1, C] named ``key`` (e.g. positional encodings, a bias)."""
        terms = list(self.terms)
        for index, term in enumerate(terms):
            if term.scale is None:  # merge with the unscaled shared term
                merged_key = ("sum", term.key, key)
                terms[index] = SharedTerm(self.cache.get(merged_key, torch.add, term.base, shared), merged_key)
                return LowRankTokens(terms, self.blocks, self.cache)
        return LowRankTokens([*terms, SharedTerm(shared, key)], self.blocks, self.cache)

    def plus_block(self, block: HeadBlock) -> LowRankTokens:
        """``X + block.weights @ block.rows()``."""
        return LowRankTokens(self.terms, [*self.blocks, block], self.cache)

    def _projected(self, term: SharedTerm, projection: nn.Linear, heads: int) -> torch.Tensor:
        """``term.base @ W^T`` [N or 1, H, d] (no bias), cached."""
        key = ("project", term.key, id(projection))
        return self.cache.get(key, _project, term.base, projection.weight, heads)

    def scores(self, projection: nn.Linear, queries: torch.Tensor) -> torch.Tensor:
        """Per-head dot products of the projected tokens with each prompt's queries.

        projection: C -> H*d; queries [P, T, H, d]. Returns [P, N, H, T] with entry
        (p, n, h, t) = ``projection(X[p])[n, h] . queries[p, t, h]``.
        """
        prompts, tokens, heads, head_dim = queries.shape
        total = torch.einsum("hd,pthd->pht", projection.bias.view(heads, head_dim), queries)[:, None]  # [P, 1, H, T]
        for term in self.terms:
            part = _head_dot(self._projected(term, projection, heads), queries)  # [P, N or 1, H, T]
            if term.scale is not None:
                scale = term.scale[..., None, None]
                part = part.mul_(scale) if part.shape[1] > 1 else part * scale
            total = part.add_(total) if part.shape[1] >= total.shape[1] else total.add_(part)
        flat = total.view(prompts, -1, heads * tokens)
        for block in self.blocks:
            projected_rows = (block.rows() @ projection.weight.T).view(prompts, -1, heads, head_dim)  # [P, r, H, d]
            mix = torch.einsum("prhd,pthd->prht", projected_rows, queries).flatten(2)  # [P, r, H*T]
            flat = flat.baddbmm_(block.weights, mix)
        return total

    def weighted_values(self, projection: nn.Linear, weights: torch.Tensor) -> torch.Tensor:
        """Attention-weighted sums of the projected tokens.

        projection: C -> H*d; weights [P, N, H, T], each (p, h, t) summing to one over N.
        Returns [P, T, H, d] = ``sum_n weights[p, n, h, t] projection(X[p])[n, h]``.
        """
        prompts, count, heads, tokens = weights.shape
        head_dim = projection.out_features // heads
        # Weights sum to one, so the bias (and any unscaled shared row) passes through unchanged.
        total = projection.bias.view(1, 1, heads, head_dim).expand(prompts, tokens, heads, head_dim)
        for term in self.terms:
            projected = self._projected(term, projection, heads)  # [N or 1, H, d]
            if term.base.shape[0] == 1 and term.scale is None:
                total = total + projected[None]
                continue
            scaled = weights if term.scale is None else weights * term.scale[..., None, None]
            if term.base.shape[0] == 1:
                total = total + scaled.sum(1).transpose(1, 2)[..., None] * projected[None]
            else:
                total = total + torch.einsum("pnht,nhd->pthd", scaled, projected)
        flat = weights.view(prompts, count, heads * tokens)
        for block in self.blocks:
            mixed = flat.transpose(1, 2) @ block.weights  # [P, H*T, r]
            projected_rows = (block.rows() @ projection.weight.T).view(prompts, -1, heads, head_dim)
            total = total + torch.einsum("phtr,prhd->pthd", mixed.view(prompts, heads, tokens, -1), projected_rows)
        return total

    def layer_norm(self, norm: nn.LayerNorm) -> LowRankTokens:
        """``norm(X)`` over channels, without forming X."""
        # Centring every factor along channels centres X (the mean is linear in the factors).
        terms = [SharedTerm(self._centred(t.base, t.key), ("centred", t.key), t.scale) for t in self.terms]
        blocks = [
            HeadBlock(b.weights, b.coefficients, self._centred(b.basis, b.key), ("centred", b.key)) for b in self.blocks
        ]
        inverse_std = torch.rsqrt(self._mean_square(terms, blocks) + norm.eps)  # [P, N]

        def gained(base: torch.Tensor, key: Hashable) -> tuple[torch.Tensor, Hashable]:
            gained_key = ("gain", key, id(norm))
            return self.cache.get(gained_key, torch.mul, base, norm.weight), gained_key

        normalised_terms = [SharedTerm(*gained(t.base, t.key), _times(t.scale, inverse_std)) for t in terms]
        normalised_blocks = [
            HeadBlock(b.weights * inverse_std[..., None], b.coefficients, *gained(b.basis, b.key)) for b in blocks
        ]
        bias = SharedTerm(norm.bias[None], ("bias", id(norm)))
        return LowRankTokens([*normalised_terms, bias], normalised_blocks, self.cache)

    def materialize(self, indexes: torch.Tensor, *, times: tuple[Hashable, torch.Tensor] | None = None) -> torch.Tensor:
        """The tokens [S, N, C] of the prompts at ``indexes`` [S], in float32 (autocast is off here).

        With ``times=(key, M)``, the tokens times M [C, K] instead ([S, N, K]), formed from the factors:
        each shared base and each block's basis is multiplied by M once (cached under ``key``), so a
        linear map of every token costs no more than forming the tokens.
        """
        with torch.autocast(self.terms[0].base.device.type, enabled=False):
            return self._materialize(indexes, times)

    def _materialize(self, indexes: torch.Tensor, times: tuple[Hashable, torch.Tensor] | None) -> torch.Tensor:
        def mapped(matrix: torch.Tensor, key: Hashable) -> torch.Tensor:
            return matrix if times is None else self.cache.get(("times", times[0], key), torch.matmul, matrix, times[1])

        count = max(term.base.shape[0] for term in self.terms)
        width = self.terms[0].base.shape[1] if times is None else times[1].shape[1]
        out = self.terms[0].base.new_zeros(len(indexes), count, width)
        for term in self.terms:
            base = mapped(term.base, term.key)
            out += base if term.scale is None else term.scale[indexes, :, None] * base
        for block in self.blocks:
            selected = HeadBlock(
                block.weights[indexes], block.coefficients[indexes], mapped(block.basis, block.key), block.key
            )
            out.baddbmm_(selected.weights, selected.rows())
        return out

    def _centred(self, matrix: torch.Tensor, key: Hashable) -> torch.Tensor:
        return self.cache.get(("centred", key), _centre, matrix)

    def _mean_square(self, terms: list[SharedTerm], blocks: list[HeadBlock]) -> torch.Tensor:
        """Mean over channels of ``X[p, n]**2`` [P, N] for X given by channel-centred factors."""
        channels = terms[0].base.shape[1]
        total: torch.Tensor | float = 0.0
        for i, first in enumerate(terms):  # shared terms with each other
            for second in terms[i:]:
                dot = self.cache.get(("dot", first.key, second.key), torch.linalg.vecdot, first.base, second.base)
                scale = first.scale if second.scale is None else _times(first.scale, second.scale)
                total = total + (1 if first is second else 2) * (dot if scale is None else scale * dot)
        for term in terms:  # shared terms with blocks: row (h, t) . S[n] = coefficients[t, h] . (basis[h] . S[n])
            for block in blocks:
                basis = block.basis.reshape(-1, channels)  # [H*d, C]
                projected = self.cache.get(("cross", term.key, block.key), _project, term.base, basis, len(block.basis))
                row_dots = _head_dot(projected, block.coefficients).flatten(2)  # [P, N or 1, r]
                cross = torch.linalg.vecdot(block.weights, row_dots)  # [P, N]
                total = total + 2 * _times(term.scale, cross)
        # Blocks with blocks: sum over block pairs of U_a G_ab U_b^T per token, G_ab the rows' products.
        rows = [b.rows() for b in blocks]  # [P, r, C] each
        for a, first in enumerate(blocks):
            for b in range(a, len(blocks)):
                products = rows[a] @ rows[b].transpose(1, 2)  # [P, r_a, r_b]
                quad = torch.linalg.vecdot(first.weights @ products, blocks[b].weights)
                total = total + (1 if a == b else 2) * quad
        return total / channels


def softmax_over_tokens(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last, small dim of scores [P, N, H, T] (faster than ``softmax(-1)`` on CPU)."""
    peak = functools.reduce(torch.maximum, scores.unbind(-1)).unsqueeze(-1)
    exp = torch.sub(scores, peak).exp_()
    return exp.div_(functools.reduce(torch.add, exp.unbind(-1)).unsqueeze(-1))


class PromptChunks:
    """Consecutive chunks of one image's prompts, each a ``LowRankTokens``, indexed as one."""

    def __init__(self, chunks: list[LowRankTokens], sizes: list[int]) -> None:
        self.chunks = chunks
        self.starts = torch.tensor([0, *sizes]).cumsum(0)

    def materialize(self, indexes: torch.Tensor, *, times: tuple[Hashable, torch.Tensor] | None = None) -> torch.Tensor:
        """The tokens [S, N, C] (or tokens times a matrix, see ``LowRankTokens.materialize``) of the
        prompts at ``indexes`` [S] (any order)."""
        indexes = torch.as_tensor(indexes).cpu()
        chunk_of = torch.searchsorted(self.starts, indexes, right=True) - 1
        parts, order = [], []
        for chunk in chunk_of.unique().tolist():
            positions = (chunk_of == chunk).nonzero()[:, 0]
            parts.append(self.chunks[chunk].materialize(indexes[positions] - self.starts[chunk], times=times))
            order.append(positions)
        if not parts:
            return self.chunks[0].materialize(indexes, times=times)
        out = torch.cat(parts)
        return out[torch.cat(order).argsort().to(out.device)]
