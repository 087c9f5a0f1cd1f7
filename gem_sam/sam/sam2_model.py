"""Building SAM 2 and SAM 2.1 models (Hiera tiny, small, base+, large) from checkpoint files.

The architecture comes from the configs that ship inside the ``sam2`` package, built as
``sam2.build_sam.build_sam2`` builds it (with its post-processing settings: single-mask outputs fall
back to the best multimask output when unstable). Weights load on the CPU with ``weights_only=True``
from the official layout ``{"model": state_dict}`` (a bare state dict is accepted too).
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass

import torch

from ..devices import resolve_device
from ..weights import load_state_dict, resolve_sam_checkpoint


@dataclass(frozen=True)
class Sam2Variant:
    """A SAM 2 model: its config inside the ``sam2`` package and its release."""

    config_file: str  # hydra config name, e.g. configs/sam2.1/sam2.1_hiera_t.yaml
    release: str  # "SAM 2" or "SAM 2.1"


SAM2_VARIANTS: dict[str, Sam2Variant] = {
    f"{prefix}_hiera_{size}": Sam2Variant(f"configs/{prefix}/{prefix}_hiera_{size}.yaml", release)
    for prefix, release in (("sam2.1", "SAM 2.1"), ("sam2", "SAM 2"))
    for size in ("t", "s", "b+", "l")
}


VIDEO_OVERRIDES = (  # what build_sam2_video_predictor adds by default (apply_postprocessing=True)
    "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
)


def _config(model_type: str, *, compile_encoder: bool = False, video: bool = False, image_size: int | None = None):
    """The composed hydra config of ``model_type`` (with ``build_sam2``'s post-processing overrides;
    ``compile_encoder``: SAM 2's own option to compile the image encoder with ``torch.compile``; ``video``:
    a ``SAM2VideoPredictor`` as ``build_sam2_video_predictor`` builds it; ``image_size``: another input
    side than the config's 1024, for fast tests)."""
    import sam2
    from hydra import compose
    from hydra.errors import MissingConfigException

    overrides = [
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    ]
    if compile_encoder:
        overrides.append("++model.compile_image_encoder=true")
    if video:
        overrides += VIDEO_OVERRIDES
    if image_size is not None:
        overrides.append(f"++model.image_size={int(image_size)}")
    config_file = SAM2_VARIANTS[model_type].config_file
    try:
        return compose(config_name=config_file, overrides=overrides)
    except MissingConfigException as error:
        raise ValueError(
            f"the installed sam2 package ({os.path.dirname(sam2.__file__)}) has no config {config_file!r} "
            f"for {model_type}; install sam2>=1.1.0, which ships the SAM 2 and SAM 2.1 configs"
        ) from error


def build_sam2_model(
    model_type: str, *, compile_encoder: bool = False, video: bool = False, image_size: int | None = None
) -> torch.nn.Module:
    """A randomly initialised SAM 2 model ``model_type`` (a ``SAM2_VARIANTS`` name) on the CPU, in eval mode;
    with ``video``, a ``SAM2VideoPredictor`` (the same weights, plus the video predictor's methods)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if model_type not in SAM2_VARIANTS:
        raise ValueError(f"unknown SAM 2 model {model_type!r}; choose one of {', '.join(SAM2_VARIANTS)}")
    config = _config(model_type, compile_encoder=compile_encoder, video=video, image_size=image_size)
    OmegaConf.resolve(config)
    return instantiate(config.model, _recursive_=True).eval()


def describe_sam2_checkpoint(state_dict: dict[str, torch.Tensor]) -> str:
    """What a state dict holds, in words, for error messages: family, trunk width and depth, release."""
    if "image_encoder.patch_embed.proj.weight" in state_dict:
        return "a SAM 1 (ViT) checkpoint; use --sam-model vit_b, vit_l or vit_h"
    patch = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return "not a SAM checkpoint (it has no image encoder weights)"
    blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", key))}
    release = "sam2.1" if "no_obj_embed_spatial" in state_dict else "sam2"
    matches = [
        name
        for name in SAM2_VARIANTS
        if name.startswith(release + "_") and _trunk_shape(name) == (int(patch.shape[0]), len(blocks))
    ]
    found = f"a SAM 2 checkpoint with a Hiera trunk of width {patch.shape[0]} and {len(blocks)} blocks"
    return f"{found}; it fits --sam-model {matches[0]}" if matches else found


def _trunk_shape(model_type: str) -> tuple[int, int]:
    """(embed_dim, blocks) of the Hiera trunk of ``model_type``, read from its config."""
    from sam2.modeling.backbones.hieradet import Hiera

    defaults = inspect.signature(Hiera.__init__).parameters  # configs leave some at Hiera's defaults
    trunk = _config(model_type).model.image_encoder.trunk
    embed_dim = trunk.get("embed_dim", defaults["embed_dim"].default)
    return int(embed_dim), int(sum(trunk.get("stages", defaults["stages"].default)))


def load_sam2(
    *,
    model_type: str,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    compile_encoder: bool = False,
    video: bool = False,
    image_size: int | None = None,
) -> torch.nn.Module:
    """Build SAM 2 ``model_type`` and load its weights (CPU first, no pickled code), then move it.

    ``checkpoint=None`` takes the official file from the cache, downloading it if needed. ``video``: a
    ``SAM2VideoPredictor`` (``build_sam2_model``).
    """
    if model_type not in SAM2_VARIANTS:
        raise ValueError(f"unknown SAM 2 model {model_type!r}; choose one of {', '.join(SAM2_VARIANTS)}")
    path = resolve_sam_checkpoint(model_type, checkpoint)
    state_dict = load_state_dict(path)
    model = build_sam2_model(model_type, compile_encoder=compile_encoder, video=video, image_size=image_size)
    missing, unexpected = (sorted(keys) for keys in _key_differences(model, state_dict))
    if missing or unexpected:
        details = "; ".join(
            f"{len(keys)} {what} key(s), e.g. {', '.join(keys[:3])}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise ValueError(
            f"SAM checkpoint {str(path)!r} does not fit {model_type}: it is {describe_sam2_checkpoint(state_dict)} "
            f"({details})"
        )
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:  # same keys, other shapes
        raise ValueError(
            f"SAM checkpoint {str(path)!r} does not fit {model_type}: it is {describe_sam2_checkpoint(state_dict)} "
            f"({error})"
        ) from error
    return model.to(resolve_device(device)).eval()


def _key_differences(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[set[str], set[str]]:
    expected = set(model.state_dict())
    return expected - set(state_dict), set(state_dict) - expected
