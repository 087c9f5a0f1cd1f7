"""Command-line options shared by ``gem_sam.label`` and ``gem_sam.evaluate``.

Options default to None where the library has a default, so the library stays the one source of
truth; the help texts read the defaults from the library's config classes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from ..evaluation.engine import ModelSpec
from ..labelling.quality import QualityControls
from ..naming.gem import MASKCLIP_VARIANTS, METHOD_OPTIONS, METHODS, DensePathConfig
from ..naming.scorer import GemScorer, ScorerConfig, build_gem_scorer
from ..naming.text import DEFAULT_TEMPLATES, TEMPLATE_SETS, template_set
from ..sam import (
    SAM2_VARIANTS,
    SAM_ARCHITECTURES,
    GridMaskGenerator,
    MaskGeneratorConfig,
    Sam2GeneratorConfig,
    build_mask_generator,
    generator_config,
    sam_model_names,
)
from ..weights import WeightsUnavailableError

DEFAULT_CLIP_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
DEFAULT_SAM_MODEL = "vit_h"
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    WeightsUnavailableError,
)
# The flag of each dense-path option (``DensePathConfig`` field names).
PATH_OPTION_FLAGS = {
    "depth": "--gem-depth",
    "iterations": "--gem-iterations",
    "maskclip_variant": "--maskclip-variant",
    "feature_surgery": "--feature-surgery/--no-feature-surgery",
    "projections": "--gem-projections",
}


def flag(name: str) -> str:
    """``points_per_side`` -> ``--points-per-side``."""
    return "--" + name.replace("_", "-")


def given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options among ``names`` that the user set (None means: library default)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def add_scorer_arguments(parser: argparse.ArgumentParser, *, with_method: bool = True) -> None:
    path_defaults = DensePathConfig()
    group = parser.add_argument_group("GEM scorer (open_clip)")
    group.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        metavar="NAME",
        help=f"open_clip model name, e.g. ViT-B-16, ViT-L-14, ViT-B-16-quickgelu (default: {DEFAULT_CLIP_MODEL})",
    )
    group.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        metavar="TAG_OR_FILE",
        help="open_clip pretrained tag (openai, metaclip_400m, laion2b_s34b_b88k, ...) or a local checkpoint file "
        f"(default: {DEFAULT_PRETRAINED})",
    )
    if with_method:
        group.add_argument(
            "--method", default="gem", choices=METHODS, help="dense path: GEM or a baseline of the paper (default: gem)"
        )
    group.add_argument(
        "--gem-depth",
        type=int,
        default=None,
        metavar="N",
        help=f"gem and clipsurgery: last ViT blocks the path spans (default: {path_defaults.depth} for gem, "
        f"{DensePathConfig.for_method('clipsurgery').depth} for clipsurgery)",
    )
    group.add_argument(
        "--gem-iterations",
        type=int,
        default=None,
        metavar="K",
        help=f"gem: self-self attention iterations K (default: {path_defaults.iterations})",
    )
    group.add_argument(
        "--gem-projections",
        type=projection_list,
        default=None,
        metavar="q,k,v",
        help="gem: projections whose self-self attention is ensembled, comma-separated (the paper's Table 1; "
        f"default: {','.join(path_defaults.projections)})",
    )
    group.add_argument(
        "--maskclip-variant",
        default=None,
        choices=MASKCLIP_VARIANTS,
        help="maskclip: official (MaskCLIP's code: residual and MLP of the last block kept) or surgery "
        f"(CLIP Surgery's variant, x + out_proj(v), no MLP) (default: {path_defaults.maskclip_variant})",
    )
    group.add_argument(
        "--feature-surgery",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clipsurgery: apply CLIP Surgery's feature surgery to the similarities; --no-feature-surgery "
        "gives the architecture-only variant (default: on)",
    )
    group.add_argument(
        "--template",
        action="append",
        default=None,
        help=f"prompt template with {{}} for the prompt; repeat to average several (default: {DEFAULT_TEMPLATES[0]!r})",
    )
    group.add_argument(
        "--templates",
        choices=TEMPLATE_SETS,
        default=None,
        help="a named template ensemble instead of --template: imagenet = CLIP's 80 ImageNet templates, each "
        "prompt's embedding the normalised mean of its normalised template embeddings",
    )
    group.add_argument(
        "--short-side",
        type=int,
        default=None,
        metavar="PIXELS",
        help=f"GEM input shortest side in pixels (default: {ScorerConfig().short_side})",
    )
    group.add_argument(
        "--max-long-side",
        type=int,
        default=None,
        metavar="PIXELS",
        help="cap on the GEM input's long side in pixels; more elongated images are scaled down so that "
        f"memory stays bounded (default: {ScorerConfig().max_long_side})",
    )


def projection_list(text: str) -> tuple[str, ...]:
    """``"q,k"`` -> ``("q", "k")``; argparse reports a bad value with the valid choices."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or any(name not in ("q", "k", "v") for name in names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of q, k, v")
    return names


def add_generator_arguments(parser: argparse.ArgumentParser, *, default_sam_model: str = DEFAULT_SAM_MODEL) -> None:
    group = parser.add_argument_group(
        "SAM mask generator",
        "Settings take the defaults of the chosen family's own generator: segment-anything's "
        "SamAutomaticMaskGenerator for SAM 1 (vit_*), sam2's SAM2AutomaticMaskGenerator for SAM 2 / 2.1 "
        "(sam2*_hiera_*). Where the two differ, both defaults are given.",
    )
    group.add_argument(
        "--sam-model",
        default=default_sam_model,
        choices=sam_model_names(),
        metavar="MODEL",
        help=f"SAM 1: {', '.join(SAM_ARCHITECTURES)}; SAM 2.1 / SAM 2: {', '.join(SAM2_VARIANTS)} "
        f"(default: {default_sam_model})",
    )
    group.add_argument(
        "--sam-checkpoint",
        default=None,
        metavar="FILE",
        help="local SAM checkpoint file; without it the official file is downloaded into ~/.cache/gem_sam "
        "(see checkpoints/README.md)",
    )
    sam2_defaults = Sam2GeneratorConfig()
    for field in dataclasses.fields(Sam2GeneratorConfig):
        sam1_field = MaskGeneratorConfig.__dataclass_fields__.get(field.name)
        if sam1_field is None:
            default = f"{_shown(field.default)}; SAM 2 only"
        elif sam1_field.default != field.default:
            default = f"{_shown(sam1_field.default)} for SAM 1, {_shown(getattr(sam2_defaults, field.name))} for SAM 2"
        else:
            default = _shown(field.default)
        help_text = f"{field.metadata['help']} (default: {default})"
        if isinstance(field.default, bool):
            group.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag(field.name), type=type(field.default), default=None, help=help_text)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset quality controls (``QualityControls``); every one is off unless given."""
    group = parser.add_argument_group(
        "dataset quality controls (off by default; good thresholds depend on the CLIP model)"
    )
    group.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        metavar="COS",
        help="drop a mask whose best pooled cosine similarity with the vocabulary is below COS, so masks that "
        "match no class are not forced into one",
    )
    group.add_argument(
        "--dedupe-iou",
        type=float,
        default=None,
        metavar="IOU",
        help="of two masks of the same class whose mask IoU is at least IOU, keep the higher score "
        "(1.0: exact duplicates)",
    )
    group.add_argument(
        "--drop-parts",
        type=float,
        default=None,
        metavar="FRACTION",
        help="drop a mask when a larger mask of the same class covers at least FRACTION of its pixels",
    )
    group.add_argument(
        "--max-masks-per-image", type=int, default=None, metavar="N", help="keep the N highest-scoring masks"
    )


def quality_from_args(args: argparse.Namespace) -> QualityControls:
    return QualityControls(**given(args, [field.name for field in dataclasses.fields(QualityControls)]))


def add_device_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto, a GPU when there is one)"
    )


def generator_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The generator settings the user set, by the reference generators' names; a SAM 2 setting with a
    SAM 1 model is refused (``generator_config``)."""
    settings = given(args, [field.name for field in dataclasses.fields(Sam2GeneratorConfig)])
    generator_config(args.sam_model, **settings)
    return settings


def scorer_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``build_gem_scorer`` besides model, weights, method and device."""
    return {
        "depth": args.gem_depth,
        "iterations": args.gem_iterations,
        "templates": templates_from_args(args),
        **given(args, ["maskclip_variant", "feature_surgery", "short_side", "max_long_side"]),
        **({"projections": args.gem_projections} if args.gem_projections else {}),
    }


def templates_from_args(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The prompt templates of ``--template`` (repeated) or ``--templates NAME``; None: the default."""
    if args.template and args.templates:
        raise ValueError(f"give --template or --templates {args.templates}, not both")
    if args.templates:
        return template_set(args.templates)
    return tuple(args.template) if args.template else None


def check_path_options(args: argparse.Namespace, *, method: str) -> None:
    """Refuse dense-path flags that ``method`` does not take, naming the flags and what it takes."""
    options = scorer_options(args)
    refused = [
        flag
        for name, flag in PATH_OPTION_FLAGS.items()
        if options.get(name) is not None and name not in METHOD_OPTIONS[method]
    ]
    if refused:
        takes = [PATH_OPTION_FLAGS[name] for name in METHOD_OPTIONS[method] if name in PATH_OPTION_FLAGS]
        raise ValueError(
            f"{', '.join(refused)}: not an option of method {method!r}; "
            f"{method} takes {', '.join(takes) if takes else 'none of the path options'}"
        )


def scorer_from_args(args: argparse.Namespace, *, method: str) -> GemScorer:
    check_path_options(args, method=method)
    return build_gem_scorer(
        model_name=args.clip_model,
        pretrained=args.pretrained,
        method=method,
        device=args.device,
        **scorer_options(args),
    )


def generator_from_args(args: argparse.Namespace, *, device: Any) -> GridMaskGenerator:
    return build_mask_generator(
        model_type=args.sam_model, checkpoint=args.sam_checkpoint, device=device, **generator_settings(args)
    )


def add_ray_arguments(group: argparse._ArgumentGroup, *, what: str) -> None:
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help=f"{what} with Ray Data, one model replica per worker: without ADDRESS on a local Ray runtime, "
        "with ADDRESS (e.g. ray://head:10001 or auto) on that cluster; needs gem_sam[ray]",
    )
    group.add_argument(
        "--ray-workers", type=int, default=None, help="model replicas with --ray (default: one per GPU, else 1)"
    )


def ray_address(args: argparse.Namespace) -> str | None:
    """The Ray cluster of ``--ray``: None for a local runtime."""
    return None if args.ray in (None, "local") else args.ray


def run_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """How an evaluation runs (``eval_engine.evaluate_selected``): records beside --out, Ray, progress."""
    return {
        "out_path": args.out,
        "restart": args.restart,
        "use_ray": args.ray is not None,
        "ray_address": ray_address(args),
        "workers": args.ray_workers,
        "progress": not args.quiet,
    }


def model_spec_from_args(args: argparse.Namespace, *, method: str, with_generator: bool) -> ModelSpec:
    """The evaluation's models as a spec (built where the images are evaluated)."""
    check_path_options(args, method=method)
    return ModelSpec(
        clip_model=args.clip_model,
        pretrained=args.pretrained,
        method=method,
        scorer_options={key: value for key, value in scorer_options(args).items() if value is not None},
        sam_model=args.sam_model if with_generator else None,
        sam_checkpoint=args.sam_checkpoint if with_generator else None,
        generator_settings=generator_settings(args) if with_generator else {},
        device=args.device,
    )


def evaluation_settings(args: argparse.Namespace, model: ModelSpec, *, gem_sam: bool) -> dict[str, Any]:
    """The settings part of an evaluation report: scorer, models, selection, and the mask generator
    with gem-sam."""
    settings: dict[str, Any] = {
        "scorer": dataclasses.asdict(model.scorer_config()),
        "model": model.settings(),
        "limit": args.limit,
        "seed": args.seed,
    }
    if gem_sam:
        settings["mask_generator"] = dataclasses.asdict(generator_config(args.sam_model, **model.generator_settings))
        settings["sam_model"] = args.sam_model
    return settings


def evaluation_report(
    args: argparse.Namespace, *, variant: str, device: str, settings: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    return {
        "method": args.method,
        "method_variant": variant,
        "model": {"clip_model": args.clip_model, "pretrained": args.pretrained},
        "device": device,
        "settings": settings,
        **results,
    }


def require_writable_file(path: str, *, option: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file: not a folder, in an existing,
    writable folder."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{option} {path!r} is a folder; give a file name, e.g. {path.rstrip('/')}/out.json")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder of {option} {path!r} does not exist ({str(parent)!r})")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{option} {path!r} cannot be written: no write permission in {str(parent)!r}")
    return target


def require_folder(path: str, *, option: str) -> Path:
    if not Path(path).is_dir():
        missing = "" if os.path.exists(path) else " (it does not exist)"
        raise FileNotFoundError(f"{option} {path!r} is not a folder{missing}")
    return Path(path)
