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
per-token scale ([N], or 1), ``U_b[p]`` [N, r] attention weights (stored transposed, [r, N]: every
per-prompt, per-token quantity keeps the tokens last, so that products with shared matrices write in
place and reductions over tokens run on contiguous memory) and ``R_b[p]`` [r, C] rows. Attention
needs projections of X only contracted with a prompt's few queries, and LayerNorm needs only each
token's mean and variance; both follow from products of the small factors with the shared matrices,
so the [P, N, C] tensor is never formed: the tokens of a prompt whose masks are wanted are formed a block
at a time from its factors (``prompts``).
Everything computed from the shared matrices alone is kept in a ``SharedCache`` and reused by every
chunk of prompts of the image.

The variance is expanded into sums of products, so results equal the dense computation up to float32
rounding (about 1e-6 relative); run it in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator
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
class HeadRows:
    """One attention's rows: row (h, t) = ``coefficients[:, t, h] @ basis[h]``, with coefficients
    [P, T, H, d] (the prompt's token values per head) and basis [H, d, C] shared, named by ``key``
    (the output projection, transformed by every later LayerNorm)."""

    coefficients: torch.Tensor
    basis: torch.Tensor
    key: Hashable

    @property
    def rank(self) -> int:
        """H*T: the number of rows."""
        return self.coefficients.shape[1] * self.coefficients.shape[2]

    def rows(self) -> torch.Tensor:
        """[P, H*T, C]."""
        prompts, tokens, heads, _ = self.coefficients.shape
        rows = torch.einsum("pthd,hdc->phtc", self.coefficients, self.basis)
        return rows.reshape(prompts, heads * tokens, self.basis.shape[-1])

    def prompt_rows(self, selection: slice | torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """[S, H*T, K]: the rows of the S prompts ``selection`` picks on another basis [H, d, K] (e.g. the
        basis times a matrix)."""
        coefficients = self.coefficients[selection]
        rows = torch.einsum("sthd,hdk->shtk", coefficients, basis)
        return rows.reshape(len(coefficients), -1, basis.shape[-1])


@dataclass(frozen=True)
class HeadBlock:
    """``weights @ rows``: attention outputs without their bias, of one attention or of several whose
    weights were scaled by the same LayerNorm into one tensor.

    weights: [P, r, N] (tokens last), r the parts' ranks in order; each part's rows (``HeadRows``)
    are its attention's (h, t) rows, head-major.
    """

    weights: torch.Tensor
    parts: tuple[HeadRows, ...]

    def rows(self) -> torch.Tensor:
        """[P, r, C]: every part's rows, in order."""
        rows = [part.rows() for part in self.parts]
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)

    def part_weights(self) -> tuple[torch.Tensor, ...]:
        """Each part's weights [P, H*T, N] (views of ``weights``)."""
        return self.weights.split([part.rank for part in self.parts], dim=1)


@dataclass(frozen=True)
class PromptTokens:
    """S prompts' N tokens ``X[s, n] = sum_i scale_i[s, n] * base_i[n] + sum_b weights_b[s, :, n] @ rows_b[s]``.

    terms: (scale [S, N] or None for 1, base [N, K] or [1, K]); blocks: (weights [S, r, N], rows [S, r, K]).
    Tokens lie on a square grid, row-major.
    """

    terms: list[tuple[torch.Tensor | None, torch.Tensor]]
    blocks: list[tuple[torch.Tensor, torch.Tensor]]
    count: int  # S

    def form(self, rows: slice, cols: int) -> torch.Tensor:
        """The tokens of grid rows ``rows`` and the first ``cols`` grid columns, row-major: [S, n, K].

        The first scaled term and the unscaled terms are written in one pass (``addcmul``)."""
        side = math.isqrt(max(base.shape[0] for _, base in self.terms))
        grid_rows = range(side)[rows]
        out = self.terms[0][1].new_empty(self.count, len(grid_rows), cols, self.terms[0][1].shape[1])

        def block_of(per_token: torch.Tensor) -> torch.Tensor:  # [N, ...] -> [rows, cols, ...]; a row as it is
            return (
                per_token if per_token.shape[0] == 1 else per_token.view(side, side, *per_token.shape[1:])[rows, :cols]
            )

        def scales_of(scale: torch.Tensor) -> torch.Tensor:  # [S, N] -> [S, rows, cols, 1]
            return scale.view(-1, side, side)[:, rows, :cols, None]

        scaled = [(scale, base) for scale, base in self.terms if scale is not None]
        unscaled = [base for scale, base in self.terms if scale is None]
        if scaled and unscaled:
            torch.addcmul(block_of(unscaled[0]), scales_of(scaled[0][0]), block_of(scaled[0][1]), out=out)
        elif scaled:
            torch.mul(scales_of(scaled[0][0]), block_of(scaled[0][1]), out=out)
        else:
            out.copy_(block_of(unscaled[0]))
        for scale, base in scaled[1:]:
            out.addcmul_(scales_of(scale), block_of(base))
        for base in unscaled[1:]:
            out.add_(block_of(base))
        flat = out.view(self.count, -1, out.shape[-1])
        for weights, block_rows in self.blocks:  # weights [S, r, N]: tokens on the last dim
            band = weights.view(*weights.shape[:2], side, side)[:, :, rows, :cols].flatten(2)  # [S, r, n]
            flat.baddbmm_(band.transpose(1, 2), block_rows)
        return flat

    def plus(self, shared: torch.Tensor, merged: dict[int, torch.Tensor]) -> PromptTokens:
        """These tokens plus shared [N, K] or [1, K], added to the unscaled term (or made one), so that forming
        them costs no extra pass. merged: the sums made so far, by the id of the unscaled term's base, for
        reuse by other prompts whose term is the same tensor (the caller keeps those tensors alive)."""
        terms = list(self.terms)
        for index, (scale, base) in enumerate(terms):
            if scale is None:
                if id(base) not in merged:
                    merged[id(base)] = base + shared
                terms[index] = (None, merged[id(base)])
                return PromptTokens(terms, self.blocks, self.count)
        return PromptTokens([*terms, (None, shared)], self.blocks, self.count)


def _head_dot(shared: torch.Tensor, per_prompt: torch.Tensor) -> torch.Tensor:
    """shared [H, d, N] (projections, tokens last) . per_prompt [P, T, H, d] over d -> [P, H, T, N].

    One product batched over heads, written head-major (contiguous [H, P, T, N]) and returned as a
    prompt-major view of it: the caller's first elementwise step lays it out prompt-major. On the CPU
    that is about half the time of a product per head writing into a slice of a prompt-major result."""
    prompts, tokens, heads, head_dim = per_prompt.shape
    queries = per_prompt.permute(2, 0, 1, 3).reshape(heads, prompts * tokens, head_dim)
    return torch.bmm(queries, shared).view(heads, prompts, tokens, -1).transpose(0, 1)


def _head_weighted_sum(weights: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """weights [P, H, T, N] and shared [H, N, d] -> [P, T, H, d] = sum over n of weights[p, h, t, n] *
    shared[h, n]. One batched product per head, each writing a contiguous slice of a head-major
    result (a product writing into a strided slice costs a copy)."""
    prompts, heads, tokens, _ = weights.shape
    out = weights.new_empty(heads, prompts, tokens, shared.shape[-1])
    for head in range(heads):
        torch.bmm(weights[:, head], shared[head].expand(prompts, -1, -1), out=out[head])
    return out.permute(1, 2, 0, 3)


def _project(matrix: torch.Tensor, weight: torch.Tensor, heads: int) -> torch.Tensor:
    """matrix [M, C] @ weight [H*d, C]^T, split into heads: [M, H, d]."""
    return (matrix @ weight.T).view(matrix.shape[0], heads, -1)


def _project_tokens_last(matrix: torch.Tensor, weight: torch.Tensor, heads: int) -> torch.Tensor:
    """``_project`` as [H, d, M] (contiguous), for ``_head_dot``."""
    return _project(matrix, weight, heads).permute(1, 2, 0).contiguous()


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

    def _projected_tokens_last(self, term: SharedTerm, projection: nn.Linear, heads: int) -> torch.Tensor:
        """``_projected`` as [H, d, N or 1], cached."""
        key = ("project, tokens last", term.key, id(projection))
        return self.cache.get(key, _project_tokens_last, term.base, projection.weight, heads)

    def scores(self, projection: nn.Linear, queries: torch.Tensor) -> torch.Tensor:
        """Per-head dot products of the projected tokens with each prompt's queries.

        projection: C -> H*d; queries [P, T, H, d]. Returns [P, H, T, N] with entry
        (p, h, t, n) = ``projection(X[p])[n, h] . queries[p, t, h]``.
        """
        prompts, tokens, heads, head_dim = queries.shape
        bias = projection.bias.view(heads, head_dim)
        offsets = torch.einsum("hd,pthd->pht", bias, queries)[..., None]  # [P, H, T, 1]: the same for every token
        per_token = []
        for term in self.terms:
            if term.base.shape[0] == 1 and term.scale is None:  # an unscaled row adds to the offsets
                offsets = offsets + _head_dot(self._projected_tokens_last(term, projection, heads), queries)
            else:
                per_token.append(term)
        # The first per-token term (the image embedding's, always [N, C]) writes the prompt-major
        # scores whole; the others add to them in place. Each reads its head-major dots once.
        total = queries.new_empty(prompts, heads, tokens, max(term.base.shape[0] for term in self.terms))
        for index, term in enumerate(per_token):
            part = _head_dot(self._projected_tokens_last(term, projection, heads), queries)  # [P, H, T, N or 1]
            before = offsets if index == 0 else total
            if term.scale is None:
                torch.add(before, part, out=total)
            else:
                torch.addcmul(before, part, term.scale[:, None, None, :], out=total)
        flat = total.view(prompts, heads * tokens, -1)
        for block in self.blocks:
            projected_rows = (block.rows() @ projection.weight.T).view(prompts, -1, heads, head_dim)  # [P, r, H, d]
            mix = torch.einsum("prhd,pthd->phtr", projected_rows, queries).flatten(1, 2)  # [P, H*T, r]
            flat = flat.baddbmm_(mix, block.weights)
        return total

    def weighted_values(self, projection: nn.Linear, weights: torch.Tensor) -> torch.Tensor:
        """Attention-weighted sums of the projected tokens.

        projection: C -> H*d; weights [P, H, T, N], each (p, h, t) summing to one over N.
        Returns [P, T, H, d] = ``sum_n weights[p, h, t, n] projection(X[p])[n, h]``.
        """
        prompts, heads, tokens, count = weights.shape
        head_dim = projection.out_features // heads
        # Weights sum to one, so the bias (and any unscaled shared row) passes through unchanged.
        total = projection.bias.view(1, 1, heads, head_dim).expand(prompts, tokens, heads, head_dim)
        for term in self.terms:
            projected = self._projected(term, projection, heads)  # [N or 1, H, d]
            if term.base.shape[0] == 1 and term.scale is None:
                total = total + projected[None]
                continue
            scaled = weights if term.scale is None else weights * term.scale[:, None, None, :]
            if term.base.shape[0] == 1:
                total = total + scaled.sum(-1).transpose(1, 2)[..., None] * projected[None]
            else:
                key = ("project, heads first", term.key, id(projection))
                heads_first = self.cache.get(key, lambda matrix: matrix.transpose(0, 1).contiguous(), projected)
                total = total + _head_weighted_sum(scaled, heads_first)
        flat = weights.reshape(prompts, heads * tokens, count)
        for block in self.blocks:
            mixed = flat @ block.weights.transpose(1, 2)  # [P, H*T, r]
            projected_rows = (block.rows() @ projection.weight.T).view(prompts, -1, heads, head_dim)
            total = total + torch.einsum("phtr,prhd->pthd", mixed.view(prompts, heads, tokens, -1), projected_rows)
        return total

    def layer_norm(self, norm: nn.LayerNorm) -> LowRankTokens:
        """``norm(X)`` over channels, without forming X.

        The blocks come out as one block: their weights times the tokens' inverse standard deviation
        are written into one tensor, so that later products with them are one product each."""
        # Centring every factor along channels centres X (the mean is linear in the factors).
        terms = [SharedTerm(self._centred(t.base, t.key), ("centred", t.key), t.scale) for t in self.terms]
        blocks = [
            HeadBlock(b.weights, tuple(HeadRows(p.coefficients, *self._centred_keyed(p.basis, p.key)) for p in b.parts))
            for b in self.blocks
        ]
        inverse_std = torch.rsqrt(self._mean_square(terms, blocks) + norm.eps)  # [P, N]

        def gained(base: torch.Tensor, key: Hashable) -> tuple[torch.Tensor, Hashable]:
            gained_key = ("gain", key, id(norm))
            return self.cache.get(gained_key, torch.mul, base, norm.weight), gained_key

        normalised_terms = [SharedTerm(*gained(t.base, t.key), _times(t.scale, inverse_std)) for t in terms]
        normalised_blocks = []
        if blocks:
            ranks = [b.weights.shape[1] for b in blocks]
            weights = inverse_std.new_empty(inverse_std.shape[0], sum(ranks), inverse_std.shape[1])  # [P, r, N]
            for block, scaled in zip(blocks, weights.split(ranks, dim=1), strict=True):
                torch.mul(block.weights, inverse_std[:, None, :], out=scaled)
            parts = tuple(HeadRows(p.coefficients, *gained(p.basis, p.key)) for b in blocks for p in b.parts)
            normalised_blocks.append(HeadBlock(weights, parts))
        bias = SharedTerm(norm.bias[None], ("bias", id(norm)))
        return LowRankTokens([*normalised_terms, bias], normalised_blocks, self.cache)

    def prompts(
        self, selection: slice | torch.Tensor, *, times: tuple[Hashable, torch.Tensor] | None = None
    ) -> PromptTokens:
        """The tokens of the prompts ``selection`` picks (a slice with a start and a stop, or indexes [S]) as
        factors, to be formed a block of tokens at a time.

        With ``times=(key, M)``, the tokens times M [C, K] instead: each shared base and each block's
        basis is multiplied by M once (cached under ``key``), so a linear map of every token costs no
        more than forming the tokens. Factors are float32 whatever the autocast state.
        """
        with torch.autocast(self.terms[0].base.device.type, enabled=False):

            def mapped(matrix: torch.Tensor, key: Hashable) -> torch.Tensor:
                if times is None:
                    return matrix
                return self.cache.get(("times", times[0], key), torch.matmul, matrix, times[1])

            terms = [(None if t.scale is None else t.scale[selection], mapped(t.base, t.key)) for t in self.terms]
            blocks = [
                (
                    b.weights[selection],
                    torch.cat([p.prompt_rows(selection, mapped(p.basis, p.key)) for p in b.parts], dim=1),
                )
                for b in self.blocks
            ]
        count = selection.stop - selection.start if isinstance(selection, slice) else len(selection)
        return PromptTokens(terms, blocks, count)

    def _centred(self, matrix: torch.Tensor, key: Hashable) -> torch.Tensor:
        return self.cache.get(("centred", key), _centre, matrix)

    def _centred_keyed(self, matrix: torch.Tensor, key: Hashable) -> tuple[torch.Tensor, Hashable]:
        return self._centred(matrix, key), ("centred", key)

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
                for part, weights in zip(block.parts, block.part_weights(), strict=True):
                    basis = part.basis.reshape(-1, channels)  # [H*d, C]
                    key = ("cross", term.key, part.key)
                    projected = self.cache.get(key, _project_tokens_last, term.base, basis, len(part.basis))
                    row_dots = _head_dot(projected, part.coefficients)  # [P, H, T, N or 1]
                    if row_dots.shape[-1] == 1:  # a row shared by every token
                        cross = (row_dots.reshape(len(row_dots), 1, -1) @ weights)[:, 0]  # [P, N]
                    else:  # written in the weights' prompt-major layout, reading the dots head-major
                        products = weights.new_empty(row_dots.shape)
                        cross = torch.mul(weights.unflatten(1, row_dots.shape[1:3]), row_dots, out=products).sum((1, 2))
                    total = total + 2 * _times(term.scale, cross)
        # Blocks with blocks: sum over block pairs of u_a . G_ab u_b per token, G_ab the rows' products.
        rows = [b.rows() for b in blocks]  # [P, r, C] each
        for a, first in enumerate(blocks):
            for b in range(a, len(blocks)):
                products = rows[a] @ rows[b].transpose(1, 2)  # [P, r_a, r_b]
                quad = (products.transpose(1, 2) @ first.weights).mul_(blocks[b].weights).sum(1)
                total = total + (1 if a == b else 2) * quad
        return total / channels


class PromptChunks:
    """Consecutive chunks of one image's prompts, each a ``LowRankTokens``, indexed as one."""

    def __init__(self, chunks: list[LowRankTokens], sizes: list[int]) -> None:
        self.chunks = chunks
        self.starts = torch.tensor([0, *sizes]).cumsum(0)

    @property
    def side(self) -> int:
        """Tokens per side of the square grid of image tokens."""
        return math.isqrt(max(term.base.shape[0] for term in self.chunks[0].terms))

    def batches(
        self,
        indexes: list[int],
        size: int,
        *,
        times: tuple[Hashable, torch.Tensor] | None = None,
        plus: torch.Tensor | None = None,
    ) -> Iterator[tuple[slice, PromptTokens]]:
        """The prompts ``indexes`` (counted over all chunks) in runs of at most ``size`` that each lie in one
        chunk: each run's positions in ``indexes`` and its tokens as factors (``LowRankTokens.prompts``).

        plus: [N, K] or [1, K] added to every prompt's (mapped) tokens, merged once into the unscaled term
        that the chunks share (``PromptTokens.plus``)."""
        merged: dict[int, torch.Tensor] = {}
        total = int(self.starts[-1])
        outside = [index for index in indexes if not 0 <= index < total]
        if outside:
            raise IndexError(f"prompt {outside[0]} out of range for {total} prompts")
        chunk_of = (torch.searchsorted(self.starts, torch.tensor(indexes, dtype=torch.long), right=True) - 1).tolist()
        start = 0
        while start < len(indexes):
            stop = start + 1
            while stop < len(indexes) and stop - start < size and chunk_of[stop] == chunk_of[start]:
                stop += 1
            chunk, offset = chunk_of[start], int(self.starts[chunk_of[start]])
            local = [index - offset for index in indexes[start:stop]]
            # one prompt: a slice, so that its factors are views, not copies
            selection = slice(local[0], local[0] + 1) if len(local) == 1 else torch.tensor(local, device=self.device)
            tokens = self.chunks[chunk].prompts(selection, times=times)
            yield slice(start, stop), tokens if plus is None else tokens.plus(plus, merged)
            start = stop

    @property
    def device(self) -> torch.device:
        return self.chunks[0].terms[0].base.device
