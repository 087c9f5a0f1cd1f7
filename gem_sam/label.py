"""Command line: label a folder of images with open-vocabulary masks, written as COCO JSON.

python -m gem_sam.label --images DIR --vocab vocab.txt --out annotations.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .gem import METHODS, DensePathConfig
from .labelling import LabelConfig
from .mask_generator import MaskGeneratorConfig, build_mask_generator
from .pipeline import AutoLabeller, label_folder
from .run_store import RunMismatchError
from .sam_model import SAM_ARCHITECTURES
from .scorer import ScorerConfig, build_gem_scorer
from .text import DEFAULT_TEMPLATES
from .vocab import read_vocabulary

DEFAULT_CLIP_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
DEFAULT_SAM_MODEL = "vit_h"
PATH_DEFAULTS = DensePathConfig()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gem_sam.label",
        description=(
            "Auto-label images with open-vocabulary masks: SAM proposes class-agnostic masks from a grid "
            "of points, GEM (a training-free dense CLIP) names each mask with the vocabulary entry whose "
            "similarity is highest inside it. Writes COCO instance annotations (RLE masks, scores). "
            "Runs resume: results are kept per image next to --out, and a second run labels only what "
            "is missing."
        ),
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--images", required=True, metavar="DIR", help="folder of images, searched recursively")
    io.add_argument(
        "--vocab", required=True, metavar="FILE", help="text file, one class name per line ('#' lines ignored)"
    )
    io.add_argument(
        "--out", default="annotations.json", metavar="FILE", help="COCO JSON file to write (default: annotations.json)"
    )
    io.add_argument("--restart", action="store_true", help="discard results of an earlier run into --out")
    io.add_argument("--quiet", action="store_true", help="no progress bar")

    clip = parser.add_argument_group("GEM scorer (open_clip)")
    clip.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        metavar="NAME",
        help=f"open_clip model name, e.g. ViT-B-16, ViT-L-14, ViT-B-16-quickgelu (default: {DEFAULT_CLIP_MODEL})",
    )
    clip.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        metavar="TAG_OR_FILE",
        help="open_clip pretrained tag (openai, metaclip_400m, laion2b_s34b_b88k, ...) or a local checkpoint file "
        f"(default: {DEFAULT_PRETRAINED})",
    )
    clip.add_argument(
        "--method", default="gem", choices=METHODS, help="dense path: GEM or a baseline of the paper (default: gem)"
    )
    clip.add_argument(
        "--gem-depth",
        type=int,
        default=None,
        help=f"last ViT blocks the path spans (default for gem: {PATH_DEFAULTS.depth})",
    )
    clip.add_argument(
        "--gem-iterations",
        type=int,
        default=None,
        help=f"self-self attention iterations K (default for gem: {PATH_DEFAULTS.iterations})",
    )
    clip.add_argument(
        "--template",
        action="append",
        default=None,
        help=f"prompt template with {{}} for the class; repeat to average several (default: {DEFAULT_TEMPLATES[0]!r})",
    )
    clip.add_argument(
        "--short-side",
        type=int,
        default=None,
        help=f"GEM input shortest side in pixels (default: {ScorerConfig().short_side})",
    )

    sam = parser.add_argument_group("SAM mask generator")
    sam.add_argument(
        "--sam-model",
        default=DEFAULT_SAM_MODEL,
        choices=sorted(SAM_ARCHITECTURES),
        help=f"SAM variant (default: {DEFAULT_SAM_MODEL})",
    )
    sam.add_argument(
        "--sam-checkpoint",
        default=None,
        metavar="FILE",
        help="local SAM checkpoint file; without it the official file is downloaded into ~/.cache/gem_sam",
    )
    for field in dataclasses.fields(MaskGeneratorConfig):
        sam.add_argument(
            _flag(field.name),
            type=type(field.default),
            default=None,
            help=f"{field.metadata['help']} (default: {field.default:g})"
            if isinstance(field.default, float)
            else f"{field.metadata['help']} (default: {field.default})",
        )

    run = parser.add_argument_group("labelling and device")
    run.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="drop masks whose class probability (softmax over the vocabulary) is below this (default: 0, keep all)",
    )
    run.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto, a GPU when there is one)"
    )
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def _given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options among ``names`` that the user set (None means: library default)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    generator_settings = _given(args, [field.name for field in dataclasses.fields(MaskGeneratorConfig)])
    try:
        vocabulary = read_vocabulary(args.vocab)
        label_config = LabelConfig(**_given(args, ["min_score"]))
        generator_config = MaskGeneratorConfig(**generator_settings)
        scorer_options = {
            "depth": args.gem_depth,
            "iterations": args.gem_iterations,
            "templates": args.template,
            **_given(args, ["short_side"]),
        }
        if not Path(args.images).is_dir():
            raise FileNotFoundError(
                f"--images {args.images!r} is not a folder"
                + ("" if os.path.exists(args.images) else " (it does not exist)")
            )
        scorer = build_gem_scorer(
            model_name=args.clip_model,
            pretrained=args.pretrained,
            method=args.method,
            device=args.device,
            **scorer_options,
        )
        generator = build_mask_generator(
            model_type=args.sam_model, checkpoint=args.sam_checkpoint, device=scorer.device, **generator_settings
        )
        labeller = AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=vocabulary, config=label_config)
        settings = {
            "vocabulary": vocabulary,
            "clip_model": args.clip_model,
            "pretrained": args.pretrained,
            "scorer": dataclasses.asdict(scorer.config),
            "sam_model": args.sam_model,
            "sam_checkpoint": args.sam_checkpoint,
            "mask_generator": dataclasses.asdict(generator_config),
            "labelling": dataclasses.asdict(label_config),
        }
        summary = label_folder(
            labeller,
            images_dir=args.images,
            out_path=args.out,
            settings=settings,
            restart=args.restart,
            progress=not args.quiet,
        )
    except (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        RunMismatchError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
