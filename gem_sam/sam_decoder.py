"""SAM's mask decoder for many point prompts on one image, with the shared work done once.

``segment_anything``'s ``MaskDecoder`` copies the 64x64x256 image embedding once per prompt and runs
every projection of the two-way transformer on each copy. This module computes the same function from
the same weights, reorganised:

* the image embedding is passed with batch size 1 and broadcast, so projections of the (shared)
  image tokens in the first block are computed once for all prompts;
* in token-to-image attention the key projection is folded into the prompt's 7 query tokens
  (``q . (W_k x + b_k) = (W_k^T q) . x + const``, and the constant drops out of the softmax) and the
  value projection is applied after the attention-weighted sum (the weights sum to one);
* in image-to-token attention the query projection is folded into the 7 key tokens and the output
  projection into the 7 value tokens;
* the expensive mask upscaling runs only for prompts that the caller selects, typically those with a
  mask whose predicted IoU passes the filter (the IoU head needs only the transformer's tokens).

Per prompt this does about a third of the multiply-adds of the reference on the 4096 image tokens and
none of its per-prompt copies. Results equal the reference up to float rounding (about 1e-6).
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention

MULTIMASK_TOKENS = slice(1, 4)  # SAM's three multimask outputs (token 0 is the single-mask output)


def tokens_to_image_attention(
    attn: Attention, queries: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor
) -> torch.Tensor:
    """``attn(q=queries, k=image_keys, v=image_values)`` for few queries and many image tokens.

    queries: [P, T, C]; image_keys, image_values: [P or 1, N, C] (batch 1 is broadcast). Returns [P, T, C].
    """
    prompts, tokens, channels = queries.shape
    heads = attn.num_heads
    head_dim = attn.internal_dim // heads
    q = attn.q_proj(queries).view(prompts, tokens, heads, head_dim)  # [P, T, H, d]
    w_k = attn.k_proj.weight.view(heads, head_dim, channels)  # [H, d, C]
    q_folded = torch.einsum("pthd,hdc->phtc", q / math.sqrt(head_dim), w_k).reshape(prompts, heads * tokens, channels)
    weights = (q_folded @ image_keys.transpose(1, 2)).softmax(dim=-1)  # [P, H*T, N]
    mixed = (weights @ image_values).view(prompts, heads, tokens, channels)  # [P, H, T, C]
    w_v = attn.v_proj.weight.view(heads, head_dim, channels)
    values = torch.einsum("phtc,hdc->pthd", mixed, w_v) + attn.v_proj.bias.view(heads, head_dim)
    return attn.out_proj(values.reshape(prompts, tokens, heads * head_dim))  # [P, T, C]


def image_to_tokens_residual(
    attn: Attention,
    image_tokens: torch.Tensor,
    image_queries: torch.Tensor,
    token_keys: torch.Tensor,
    token_values: torch.Tensor,
) -> torch.Tensor:
    """``image_tokens + attn(q=image_queries, k=token_keys, v=token_values)`` for many image tokens.

    image_tokens, image_queries: [P or 1, N, C]; token_keys, token_values: [P, T, C]. Returns [P, N, C].
    """
    prompts, tokens, channels = token_keys.shape
    heads = attn.num_heads
    head_dim = attn.internal_dim // heads
    k = attn.k_proj(token_keys).view(prompts, tokens, heads, head_dim) / math.sqrt(head_dim)  # [P, T, H, d]
    w_q = attn.q_proj.weight.view(heads, head_dim, channels)
    k_folded = torch.einsum("pthd,hdc->phtc", k, w_q).reshape(prompts, heads * tokens, channels)
    k_bias = torch.einsum("pthd,hd->pht", k, attn.q_proj.bias.view(heads, head_dim)).reshape(prompts, 1, -1)
    scores = torch.baddbmm(k_bias, image_queries.expand(prompts, -1, -1), k_folded.transpose(1, 2))  # [P, N, H*T]
    weights = scores.view(*scores.shape[:2], heads, tokens).softmax(dim=-1).flatten(2)  # [P, N, H*T]
    v = attn.v_proj(token_values).view(prompts, tokens, heads, head_dim)
    w_out = attn.out_proj.weight.view(channels, heads, head_dim)
    v_folded = torch.einsum("pthd,chd->phtc", v, w_out).reshape(prompts, heads * tokens, channels)
    # Each head's weights sum to one, so the output bias is spread evenly over the H heads' rows.
    v_folded = v_folded + attn.out_proj.bias / heads
    return torch.baddbmm(image_tokens.expand(prompts, -1, -1), weights, v_folded)  # [P, N, C]


class PointPromptDecoder:
    """Decodes point prompts on one image embedding; outputs equal ``MaskDecoder(multimask_output=True)``."""

    def __init__(self, sam: Sam) -> None:
        self.sam = sam
        self.decoder = sam.mask_decoder
        self.transformer = sam.mask_decoder.transformer

    def transform(self, image_embedding: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the two-way transformer for single positive points.

        image_embedding: [1, C, h, w] from the image encoder; coords: [P, 2] (x, y) in the encoder's
        1024-pixel input frame. Returns tokens [P, T, C] and image tokens [P, h*w, C].
        """
        prompt_encoder = self.sam.prompt_encoder
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=coords.device)
        sparse, dense = prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
        output_tokens = torch.cat([self.decoder.iou_token.weight, self.decoder.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(sparse.shape[0], -1, -1), sparse], dim=1)  # [P, T, C]
        keys = (image_embedding + dense[:1]).flatten(2).transpose(1, 2)  # [1, N, C]: no prompt has a mask
        key_pe = prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)  # [1, N, C]

        queries = tokens
        for layer in self.transformer.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            keys_with_pe = keys + key_pe
            queries = layer.norm2(
                queries
                + tokens_to_image_attention(layer.cross_attn_token_to_image, queries + tokens, keys_with_pe, keys)
            )
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(
                image_to_tokens_residual(layer.cross_attn_image_to_token, keys, keys_with_pe, queries + tokens, queries)
            )
        final = tokens_to_image_attention(
            self.transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys
        )
        queries = self.transformer.norm_final_attn(queries + final)
        return queries, keys

    def iou_predictions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[P, T, C] transformer tokens -> [P, 3] predicted IoU of the three multimask outputs."""
        return self.decoder.iou_prediction_head(tokens[:, 0])[:, MULTIMASK_TOKENS]

    def mask_logits(self, tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """[S, T, C] tokens and [S, N, C] image tokens -> [S, 3, 4h, 4w] low-resolution mask logits."""
        prompts, count, channels = image_tokens.shape
        side = math.isqrt(count)
        grid = image_tokens.transpose(1, 2).reshape(prompts, channels, side, side)
        upscaled = self.decoder.output_upscaling(grid)  # [S, c, 4h, 4w]
        hyper = torch.stack(
            [
                self.decoder.output_hypernetworks_mlps[index](tokens[:, 1 + index])
                for index in range(MULTIMASK_TOKENS.start, MULTIMASK_TOKENS.stop)
            ],
            dim=1,
        )  # [S, 3, c]
        _, c, height, width = upscaled.shape
        return (hyper @ upscaled.view(prompts, c, height * width)).view(prompts, hyper.shape[1], height, width)
