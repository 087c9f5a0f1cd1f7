"""Building SAM 1 models (ViT-B/L/H) from checkpoint files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..devices import resolve_device
from ..weights import load_state_dict, resolve_sam_checkpoint

SAM_IMAGE_SIZE = 1024  # SAM's square input side in pixels
SAM_PATCH_SIZE = 16
SAM_PROMPT_DIM = 256


@dataclass(frozen=True)
class SamArchitecture:
    """The image-encoder shape of a SAM variant (prompt encoder and decoder are shared)."""

    embed_dim: int  # encoder width
    depth: int  # encoder blocks
    num_heads: int  # encoder attention heads
    global_attn_indexes: tuple[int, ...]  # blocks with global (not windowed) attention


SAM_ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_b": SamArchitecture(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamArchitecture(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamArchitecture(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


def register_sam_architecture(name: str, architecture: SamArchitecture) -> None:
    """Make a SAM variant (e.g. a smaller fine-tuned encoder) buildable by name."""
    SAM_ARCHITECTURES[name] = architecture


def build_sam_model(architecture: SamArchitecture) -> Sam:
    """A randomly initialised SAM with the given image encoder, in eval mode."""
    embedding_size = SAM_IMAGE_SIZE // SAM_PATCH_SIZE
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=architecture.depth,
            embed_dim=architecture.embed_dim,
            img_size=SAM_IMAGE_SIZE,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=architecture.num_heads,
            patch_size=SAM_PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=architecture.global_attn_indexes,
            window_size=14,
            out_chans=SAM_PROMPT_DIM,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=SAM_PROMPT_DIM,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(SAM_IMAGE_SIZE, SAM_IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=SAM_PROMPT_DIM, mlp_dim=2048, num_heads=8),
            transformer_dim=SAM_PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def describe_encoder(state_dict: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """(embed_dim, depth) of the SAM image encoder in a state dict, or None if it has none."""
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", key))}
    return int(patch.shape[0]), len(blocks)


def load_sam(
    *, model_type: str = "vit_h", checkpoint: str | os.PathLike | None = None, device: str | torch.device = "auto"
) -> Sam:
    """Build SAM ``model_type`` and load its weights (CPU first, no pickled code), then move it.

    ``checkpoint=None`` takes the official file from the cache, downloading it if needed.
    """
    if model_type not in SAM_ARCHITECTURES:
        raise ValueError(f"unknown SAM model {model_type!r}; choose one of {', '.join(SAM_ARCHITECTURES)}")
    architecture = SAM_ARCHITECTURES[model_type]
    path = resolve_sam_checkpoint(model_type, checkpoint)
    state_dict = load_state_dict(path)
    found = describe_encoder(state_dict)
    if found is None:
        if "image_encoder.trunk.patch_embed.proj.weight" in state_dict:
            raise ValueError(
                f"SAM checkpoint {str(path)!r} is a SAM 2 checkpoint (Hiera image encoder), not {model_type}; "
                "pass --sam-model sam2.1_hiera_t|s|b+|l (or sam2_hiera_*)"
            )
        raise ValueError(f"{str(path)!r} is not a SAM checkpoint (it has no image_encoder weights)")
    if found != (architecture.embed_dim, architecture.depth):
        matches = [name for name, arch in SAM_ARCHITECTURES.items() if (arch.embed_dim, arch.depth) == found]
        hint = f"; it is a {matches[0]} checkpoint, so pass --sam-model {matches[0]}" if matches else ""
        raise ValueError(
            f"SAM checkpoint {str(path)!r} has an image encoder of width {found[0]} and {found[1]} blocks, "
            f"but {model_type} needs width {architecture.embed_dim} and {architecture.depth} blocks{hint}"
        )
    sam = build_sam_model(architecture)
    try:
        sam.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"SAM checkpoint {str(path)!r} does not fit {model_type}: {error}") from error
    return sam.to(resolve_device(device)).eval()
