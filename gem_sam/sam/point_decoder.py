"""SAM's mask decoder for many point prompts on one image, with the shared work done once.

Serves both families: SAM 1's ``segment_anything`` ``MaskDecoder`` and SAM 2's
``sam2.modeling.sam.mask_decoder.MaskDecoder`` run the same two-way transformer; SAM 2 adds an
object-score token before the IoU token and adds high-resolution image features inside the output
upscaling, both handled here.

The reference decoders copy the 64x64x256 image embedding once per prompt and run every projection
and LayerNorm of the two-way transformer on each copy. This module computes the same function from the
same weights without forming the per-prompt image tokens: they are held as the shared embedding plus
each prompt's low-rank attention updates (``low_rank_tokens.LowRankTokens``), so projections of image
tokens are computed once per batch of prompts and each prompt costs only products with its few tokens.
The expensive mask upscaling runs only for prompts that the caller selects, typically those with a
mask whose predicted IoU passes the filter (the IoU head needs only the output tokens).

Results equal the reference up to float32 rounding (about 1e-6); the transformer always runs in
float32 because its LayerNorm statistics are expanded into sums of products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .low_rank_tokens import HeadBlock, HeadRows, LowRankTokens, PromptChunks, SharedCache

MULTIMASK_OUTPUTS = (1, 2, 3)  # SAM's three multimask outputs (mask token 0 is the single-mask output)
ALL_OUTPUTS = (0, 1, 2, 3)  # the single-mask output and the multimask outputs


@dataclass(frozen=True)
class WorkSizes:
    """How much of the decoder's work one pass of kernels takes; the results are the same up to float32
    rounding whatever the sizes.

    prompts_per_chunk: prompts whose per-prompt factors are computed together; None: all the prompts
    of a call. tokens_per_band: image tokens whose mask logits are formed at a time; None: the whole grid.
    prompts_per_logit_batch: prompts whose mask logits are formed together.
    """

    prompts_per_chunk: int | None
    tokens_per_band: int | None
    prompts_per_logit_batch: int

    @staticmethod
    def for_device(device: torch.device) -> WorkSizes:
        """On a CPU, a few prompts' factors and one band's pixels stay in the cache. On a GPU the number
        of kernel launches is what counts, so a chunk is all the prompts of a batch and a band the whole
        grid."""
        if device.type == "cpu":
            # logits of 4 prompts together took 8% less time, but raised the peak of a labelling by 20-50 MB
            return WorkSizes(prompts_per_chunk=8, tokens_per_band=1024, prompts_per_logit_batch=1)
        # 16 prompts' full-grid pixels: [16, 65536, 32] float32 after the second convolution, 134 MB
        return WorkSizes(prompts_per_chunk=None, tokens_per_band=None, prompts_per_logit_batch=16)


def _split_heads(attn: nn.Module, projected: torch.Tensor) -> torch.Tensor:
    """[P, T, H*d] -> [P, T, H, d] for ``attn``'s heads."""
    return projected.view(*projected.shape[:2], attn.num_heads, attn.internal_dim // attn.num_heads)


def tokens_to_image_attention(
    attn: nn.Module, queries: torch.Tensor, image: LowRankTokens, key_pe: torch.Tensor
) -> torch.Tensor:
    """``attn(q=queries, k=image + key_pe, v=image)`` for queries [P, T, C]. Returns [P, T, C]."""
    prompts, tokens, _ = queries.shape
    q = _split_heads(attn, attn.q_proj(queries))
    scores = image.plus(key_pe, key="pe").scores(attn.k_proj, q / math.sqrt(q.shape[-1]))  # [P, H, T, N]
    values = image.weighted_values(attn.v_proj, scores.softmax(dim=-1))  # softmax over image tokens
    return attn.out_proj(values.reshape(prompts, tokens, attn.internal_dim))


def image_to_tokens_residual(
    attn: nn.Module, image: LowRankTokens, key_pe: torch.Tensor, token_keys: torch.Tensor, token_values: torch.Tensor
) -> LowRankTokens:
    """``image + attn(q=image + key_pe, k=token_keys, v=token_values)``; token_keys, token_values [P, T, C]."""
    k = _split_heads(attn, attn.k_proj(token_keys))
    scores = image.plus(key_pe, key="pe").scores(attn.q_proj, k / math.sqrt(k.shape[-1]))  # [P, H, T, N]
    heads, head_dim = k.shape[2:]
    basis = attn.out_proj.weight.T.reshape(heads, head_dim, -1)  # row h*d + i of W_out^T is basis[h, i]
    values = _split_heads(attn, attn.v_proj(token_values))
    block = HeadBlock(scores.softmax(dim=2).flatten(1, 2), (HeadRows(values, basis, ("out", id(attn))),))  # over T
    # Each head's weights sum to one over the tokens, so the output bias is added once per image token.
    return image.plus_block(block).plus(attn.out_proj.bias[None], key=("bias", id(attn)))


class PointPromptDecoder:
    """Decodes single positive point prompts on one image embedding, as the family's ``MaskDecoder``.

    prompt_encoder, mask_decoder: the model's own modules (SAM 1: ``sam.prompt_encoder`` and
    ``sam.mask_decoder``; SAM 2: ``sam_prompt_encoder`` and ``sam_mask_decoder``). work_sizes: None
    takes ``WorkSizes.for_device`` of the image embedding's device.
    """

    def __init__(
        self, prompt_encoder: nn.Module, mask_decoder: nn.Module, *, work_sizes: WorkSizes | None = None
    ) -> None:
        self.work_sizes = work_sizes
        self.prompt_encoder = prompt_encoder
        self.decoder = mask_decoder
        self.transformer = mask_decoder.transformer
        # SAM 2 puts an object-score token first; the IoU token and the mask tokens follow it.
        self.iou_token_index = 1 if getattr(mask_decoder, "pred_obj_scores", False) else 0

    def _output_tokens(self) -> torch.Tensor:
        """[T_out, C]: (object-score token,) IoU token, mask tokens."""
        parts = [self.decoder.iou_token.weight, self.decoder.mask_tokens.weight]
        if self.iou_token_index:
            parts.insert(0, self.decoder.obj_score_token.weight)
        return torch.cat(parts)

    def _work_sizes(self, device: torch.device) -> WorkSizes:
        return self.work_sizes or WorkSizes.for_device(device)

    def transform(
        self, image_embedding: torch.Tensor, coords: torch.Tensor, *, mask_outputs: Sequence[int] = ALL_OUTPUTS
    ) -> tuple[torch.Tensor, PromptChunks]:
        """Run the two-way transformer for single positive points.

        image_embedding: [1, C, h, w] from the image encoder; coords: [P, 2] (x, y) in the encoder's
        1024-pixel input frame; mask_outputs: the mask outputs whose logits may be asked for.
        Returns tokens [P, T, C] and the prompts' image tokens (h*w of them, row-major), to be formed a
        batch at a time (``mask_logits``) for the prompts whose masks are wanted.

        Only the IoU token and the tokens of ``mask_outputs`` go through the final token-to-image
        attention, since nothing else reads its output (per query it is independent of the other
        queries); the other rows of the returned tokens (SAM 2's object-score token, the point tokens,
        the other mask tokens) are NaN.
        """
        with torch.autocast(image_embedding.device.type, enabled=False):
            image_embedding, coords = image_embedding.float(), coords.float()
            # No prompt has a mask, so the dense embedding is the same for all: one shared [N, C] matrix.
            dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            embedding = (image_embedding + dense)[0].flatten(1).T  # [N, C]
            key_pe = self.prompt_encoder.get_dense_pe()[0].flatten(1).T  # [N, C]
            cache = SharedCache()
            chunk_size = self._work_sizes(coords.device).prompts_per_chunk or max(1, len(coords))
            final_rows = self._final_rows(mask_outputs)
            parts = [
                self._transform(LowRankTokens.shared(embedding, key="image", cache=cache), key_pe, chunk, final_rows)
                for chunk in coords.split(chunk_size)
            ]
        chunks = PromptChunks([image for _, image in parts], [len(tokens) for tokens, _ in parts])
        return torch.cat([tokens for tokens, _ in parts]), chunks

    def _final_rows(self, mask_outputs: Sequence[int]) -> list[int]:
        """The token rows that the final attention computes: the IoU token and the mask outputs' tokens."""
        known = range(len(self.decoder.output_hypernetworks_mlps))
        unknown = [output for output in mask_outputs if output not in known]
        if unknown or not mask_outputs:
            raise ValueError(f"mask outputs {list(mask_outputs)}: each must be one of {list(known)}, at least one")
        return [self.iou_token_index, *(self.iou_token_index + 1 + output for output in sorted(set(mask_outputs)))]

    def _transform(
        self, image: LowRankTokens, key_pe: torch.Tensor, coords: torch.Tensor, final_rows: list[int]
    ) -> tuple[torch.Tensor, LowRankTokens]:
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=coords.device)
        sparse, _ = self.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
        tokens = torch.cat([self._output_tokens().expand(sparse.shape[0], -1, -1), sparse], dim=1)  # [P, T, C]
        queries = tokens
        for layer in self.transformer.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            queries = layer.norm2(
                queries + tokens_to_image_attention(layer.cross_attn_token_to_image, queries + tokens, image, key_pe)
            )
            queries = layer.norm3(queries + layer.mlp(queries))
            image = image_to_tokens_residual(
                layer.cross_attn_image_to_token, image, key_pe, queries + tokens, queries
            ).layer_norm(layer.norm4)
        queries, point_embeddings = queries[:, final_rows], tokens[:, final_rows]
        final = tokens_to_image_attention(
            self.transformer.final_attn_token_to_image, queries + point_embeddings, image, key_pe
        )
        out = torch.full_like(tokens, math.nan)
        out[:, final_rows] = self.transformer.norm_final_attn(queries + final)
        return out, image

    def iou_predictions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[P, T, C] transformer tokens -> [P, M] predicted IoU of every mask output (M = 4: the
        single-mask output 0 and the multimask outputs 1-3)."""
        return self.decoder.iou_prediction_head(tokens[:, self.iou_token_index])

    def mask_logits(
        self,
        tokens: torch.Tensor,
        image: PromptChunks,
        indexes: torch.Tensor,
        *,
        outputs: Sequence[int] | torch.Tensor = MULTIMASK_OUTPUTS,
        shifts: tuple[torch.Tensor, torch.Tensor] | None = None,
        extent_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """[S, T, C] tokens of the prompts at ``indexes`` [S] and all prompts' image tokens ->
        [S, K, h, w] low-resolution logits of mask outputs ``outputs`` (K of them, the same for every
        prompt, or [S, K] per prompt), float32. Each output must be among ``transform``'s mask_outputs.

        shifts: what is added after the first and the second upscaling convolution, from
        ``upscaling_shifts`` (computed once per image); None: the convolutions' biases.
        extent_hw: the top-left region of the 4*side x 4*side logits that is wanted (the rest of the
        input frame is padding for a SAM 1 image that is not square); it is rounded up to whole tokens,
        so h, w are the next multiples of 4. None: all of it.

        The output upscaling (2x2 stride-2 transposed convolution, LayerNorm over channels, GELU,
        another such convolution, GELU) mixes no pixels: each transposed convolution maps one pixel's
        channels to its 2x2 block of output pixels. So it runs channels-last, a batch of prompts and a
        band of token rows at a time (``WorkSizes``: on a CPU one prompt and a band small enough to stay in
        its cache), as matrix products: the first convolution folded into the tokens' factors
        (``prompts(times=...)``), the LayerNorm over the last dim, the second convolution, and the
        hypernetwork product giving [K, pixels] per prompt. The pixels stay in the order the convolutions
        write them (by token, then by block offset) until the K logits are put in raster order, the
        smallest tensor of the chain.
        """
        first, norm, activation, second, last_activation = self.decoder.output_upscaling
        mask_tokens = tokens[:, self.iou_token_index + 1 :]
        requested = outputs if isinstance(outputs, torch.Tensor) else torch.tensor(list(outputs), device=tokens.device)
        requested = requested.expand(len(tokens), -1)  # [S, K]
        missing = requested[mask_tokens[:, :, 0].gather(1, requested).isnan()]
        if len(missing):
            raise ValueError(f"mask outputs {missing.unique().tolist()} were not formed: add them to mask_outputs")
        hyper = torch.stack(
            [mlp(mask_tokens[:, index]) for index, mlp in enumerate(self.decoder.output_hypernetworks_mlps)], dim=1
        )  # [S, M, c2]
        if isinstance(outputs, torch.Tensor):
            hyper = hyper.gather(1, outputs[..., None].expand(-1, -1, hyper.shape[2]))  # [S, K, c2]
        else:
            hyper = hyper[:, list(outputs)]
        side = image.side
        rows, cols = (side, side) if extent_hw is None else (math.ceil(extent_hw[0] / 4), math.ceil(extent_hw[1] / 4))
        c1, c2 = first.weight.shape[1], second.weight.shape[1]
        first_shift, second_shift = shifts if shifts is not None else self.upscaling_shifts(None, side=side)
        first_matrix = (("upscale", id(first)), _per_pixel_block(first))
        second_matrix = _per_pixel_block(second)
        out = torch.empty(len(indexes), hyper.shape[1], 4 * rows, 4 * cols, device=hyper.device)
        sizes = self._work_sizes(hyper.device)
        band_tokens = sizes.tokens_per_band or rows * cols
        # pixels stay in token order throughout: token (i, j) of the band, then the first convolution's
        # offset (a, b), then the second's (a2, b2); per-pixel steps do not mind. Each shift is added in
        # the pass that forms what it shifts: the first with the tokens' unscaled term, the second in the
        # second convolution's product.
        batches = image.batches(
            indexes.tolist(), sizes.prompts_per_logit_batch, times=first_matrix, plus=_blocks_as_rows(first_shift)
        )
        second_shift = _blocks_as_rows(second_shift)
        for slots, prompts in batches:
            count = slots.stop - slots.start
            for band in _row_bands(rows, cols, band_tokens):
                band_rows = band.stop - band.start
                x = activation(
                    F.layer_norm(prompts.form(band, cols).view(count, -1, c1), (c1,), norm.weight, norm.bias, norm.eps)
                )
                x = _shifted_product(x, second_matrix, _token_band(second_shift, band, cols, side))
                # one product per prompt and token row: a product per prompt, [K, c2] times [c2, pixels] with K
                # at most 4, would run on one core
                features = last_activation(x).view(count * band_rows, -1, c2)  # [S*rows, pixels of a row, c2]
                weights = hyper[slots].to(x.dtype)[:, None].expand(-1, band_rows, -1, -1).flatten(0, 1)
                masks = torch.bmm(weights, features.transpose(1, 2))  # [S*rows, K, pixels of a row]
                # pixel (i, j, a, b, a2, b2) lies at row 4i + 2a + a2, column 4j + 2b + b2: a pixel
                # shuffle of the 16 offsets (a, a2, b, b2) as channels, faster than one 7-d permute
                offsets = masks.view(count, band_rows, -1, cols, 2, 2, 2, 2).permute(0, 2, 4, 6, 5, 7, 1, 3)
                shuffled = F.pixel_shuffle(offsets.reshape(-1, 16, band_rows, cols), 4)  # [S*K, 1, 4 rows, 4 cols]
                out[slots, :, 4 * band.start : 4 * band.stop].copy_(shuffled.view(count, -1, *shuffled.shape[2:]))
        return out

    def upscaling_shifts(
        self, high_res_features: Sequence[torch.Tensor] | None, *, side: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``mask_logits`` adds after each upscaling convolution, for an image embedding of
        ``side`` x ``side`` tokens: the biases, plus with SAM 2's ``use_high_res_features`` its maps
        high_res_features = ([1, C/8, 4 side, 4 side], [1, C/4, 2 side, 2 side]) in pixel order."""
        first, _, _, second, _ = self.decoder.output_upscaling
        feature_s0, feature_s1 = high_res_features if high_res_features is not None else (None, None)
        with torch.autocast(first.bias.device.type, enabled=False):
            return (
                _pixel_shift(first.bias, feature_s1, side, levels=1),
                _pixel_shift(second.bias, feature_s0, side, levels=2),
            )


def _pixel_shift(bias: torch.Tensor, feature: torch.Tensor | None, side: int, *, levels: int) -> torch.Tensor:
    """What is added to a transposed convolution's output before its activation or LayerNorm: the bias
    [c] ([1, c]), plus for SAM 2 the high-resolution feature map [1, c, side * 2**levels, same],
    channels-last in the pixel order of ``mask_logits``: by token (i, j), then by block offset, (a, b)
    after the first convolution (levels 1), (a, b, a2, b2) after the second (levels 2).
    [side * side * 4**levels, c]."""
    if feature is None:
        return bias[None]
    channels = feature.shape[1]
    if levels == 1:  # row = (i, a), col = (j, b) -> (i, j, a, b)
        grid = feature[0].reshape(channels, side, 2, side, 2).permute(1, 3, 2, 4, 0)
    else:  # row = (i, a, a2), col = (j, b, b2) -> (i, j, a, b, a2, b2)
        grid = feature[0].reshape(channels, side, 2, 2, side, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
    return grid.reshape(-1, channels).float() + bias


def _blocks_as_rows(shift: torch.Tensor) -> torch.Tensor:
    """A shift from ``_pixel_shift`` ([pixels, c] in its pixel order, or a bias [1, c]) with each 2x2 block
    of the last convolution's pixels on one row, columns ordered (a, b, channel) as ``_per_pixel_block``
    writes them: [pixels / 4, 4 c] (after the first convolution one row per token, after the second one
    per pixel of the first), or [1, 4 c]."""
    return shift.repeat(1, 4) if shift.shape[0] == 1 else shift.view(-1, 4 * shift.shape[1])


def _shifted_product(pixels: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """pixels [S, n, c_in] @ matrix [c_in, c_out] + shift ([1, c_out], or [n, c_out] the same for every
    prompt) -> [S, n, c_out], the shift added by the product itself rather than in a pass of its own."""
    count, n, _ = pixels.shape
    if count == 1 or shift.shape[0] == 1:
        return torch.addmm(shift, pixels.reshape(count * n, -1), matrix).view(count, n, -1)
    return torch.baddbmm(shift.expand(count, -1, -1), pixels, matrix.expand(count, -1, -1))


def _row_bands(rows: int, cols: int, band_tokens: int) -> list[slice]:
    """Token rows 0..rows-1 (``cols`` tokens each) in near-equal bands of at most about ``band_tokens``."""
    count = math.ceil(rows * cols / band_tokens)
    bounds = [round(rows * k / count) for k in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True) if stop > start]


def _token_band(shift: torch.Tensor, band: slice, cols: int, side: int) -> torch.Tensor:
    """The rows of a shift from ``_pixel_shift`` ([side * side * n, c], n pixels per token, in token
    order) for the tokens of ``band`` and the first ``cols`` columns; a shift of one row as it is."""
    if shift.shape[0] == 1:
        return shift
    per_token = shift.shape[0] // (side * side)
    return shift.view(side, side, per_token, shift.shape[1])[band, :cols].reshape(-1, shift.shape[1])


def _per_pixel_block(convolution: torch.nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2, stride-2 transposed convolution's weight [C_in, C_out, 2, 2] as the matrix [C_in, 4*C_out]
    that maps one input pixel's channels to its 2x2 output block, columns ordered (a, b, channel)."""
    weight = convolution.weight
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 4 * weight.shape[1])
