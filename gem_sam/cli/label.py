"""Command line: label a folder of images with open-vocabulary masks, written as COCO JSON.

python -m gem_sam.label --images DIR --vocab vocab.txt --out annotations.json
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..labelling.config import LabelConfig
from ..labelling.pipeline import label_folder
from ..labelling.run_paths import check_run_paths
from ..labelling.spec import LabellerSpec
from ..naming.vocabulary import read_vocabulary
from ..run_store import RunMismatchError, check_resumable
from ..sam import generator_config
from .args import (
    USER_ERRORS,
    add_device_argument,
    add_generator_arguments,
    add_quality_arguments,
    add_ray_arguments,
    add_scorer_arguments,
    check_path_options,
    generator_settings,
    given,
    quality_from_args,
    ray_address,
    require_folder,
    require_writable_file,
    scorer_options,
)


def build_parser(*, prog: str = "python -m gem_sam.label") -> argparse.ArgumentParser:
    """The options; ``prog`` names the command in the help (``gem-sam label`` or the module)."""
    parser = argparse.ArgumentParser(
        prog=prog,
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
    add_vocabulary_argument(io)
    io.add_argument(
        "--out",
        default="annotations.json",
        metavar="FILE",
        help="COCO JSON file to write (default: annotations.json); inside --images, it and the files named after "
        "it are never taken for photos",
    )
    io.add_argument("--restart", action="store_true", help="discard results of an earlier run into --out")
    io.add_argument(
        "--save-overlays",
        default=None,
        metavar="DIR",
        help="also write each image with its masks coloured by class and named, as JPEG, into DIR (outside "
        "--images; a.jpg and a.png get a.jpg and a_png.jpg)",
    )
    io.add_argument("--quiet", action="store_true", help="no progress bar")

    run = add_labeller_arguments(parser)
    add_ray_arguments(run, what="label")
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def add_vocabulary_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--vocab",
        required=True,
        metavar="FILE",
        help="the vocabulary: a text file with one class per line, or 'class: prompt, prompt, ...' to give a class "
        "several prompts, and 'background: sky, wall, ...' for prompts whose masks are not written ('#' lines "
        "ignored); or a CaptionOntology .json {\"prompt\": \"class\"}; or a .yaml with 'classes:' and 'background:'",
    )


def add_labeller_arguments(
    parser: argparse.ArgumentParser, *, default_sam_model: str | None = None
) -> argparse._ArgumentGroup:
    """Models, generator settings, quality controls, --min-score and --device; returns the last group."""
    add_scorer_arguments(parser)
    add_generator_arguments(parser, **({"default_sam_model": default_sam_model} if default_sam_model else {}))
    add_quality_arguments(parser)
    run = parser.add_argument_group("labelling and device")
    run.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="drop masks whose class probability (softmax over the vocabulary) is below this (default: 0, keep all)",
    )
    add_device_argument(run)
    return run


def labeller_spec_from_args(args: argparse.Namespace) -> LabellerSpec:
    """The labeller of the options (the vocabulary is read, and checked, first)."""
    vocabulary = read_vocabulary(args.vocab)
    check_path_options(args, method=args.method)
    return LabellerSpec(
        vocabulary=vocabulary,
        clip_model=args.clip_model,
        pretrained=args.pretrained,
        method=args.method,
        scorer_options=scorer_options(args),
        sam_model=args.sam_model,
        sam_checkpoint=args.sam_checkpoint,
        generator=generator_config(args.sam_model, **generator_settings(args)),
        labelling=LabelConfig(**given(args, ["min_score"]), quality=quality_from_args(args)),
        device=args.device,
    )


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.label") -> int:
    parser = build_parser(prog=prog)
    args = parser.parse_args(argv)
    try:
        require_folder(args.images, option="--images")
        require_writable_file(args.out, option="--out")
        check_run_paths(images_dir=args.images, out_path=args.out, overlay_dir=args.save_overlays)
        spec = labeller_spec_from_args(args)
        if not args.restart:  # refused before any model is loaded
            check_resumable(args.out, settings=spec.settings(), images_dir=args.images)
        run_options = {
            "images_dir": args.images,
            "out_path": args.out,
            "restart": args.restart,
            "progress": not args.quiet,
            "overlay_dir": args.save_overlays,
        }
        if args.ray is not None:
            from ..labelling.ray_engine import label_folder_ray

            summary = label_folder_ray(spec, address=ray_address(args), workers=args.ray_workers, **run_options)
        else:
            summary = label_folder(spec.build(), settings=spec.settings(), **run_options)
    except (*USER_ERRORS, RunMismatchError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    print(f"wrote {args.out}")
    return 0
