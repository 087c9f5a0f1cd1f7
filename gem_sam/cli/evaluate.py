"""Command line: p-mIoU on OpenImages V7 point labels, the paper's Table 3.

    python -m gem_sam.evaluate --points oidv7-val-annotations-point-labels.csv \\
        --classes oidv7-class-descriptions.csv --images val_images/ --method gem-sam --out report.json

The evaluation itself is ``gem_sam.evaluation.points``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..atomic import write_json_atomic
from ..evaluation.point_predictor import (
    EVAL_METHODS,
    OVERLAP_RULES,
    SAM_RULES,
    UNCOVERED_RULES,
    PointPredictor,
    SamRefinement,
)
from ..evaluation.points import device_name, evaluate_points, markdown_table, method_variant
from ..run_store import RunMismatchError
from .args import (
    USER_ERRORS,
    add_device_argument,
    add_generator_arguments,
    add_ray_arguments,
    add_scorer_arguments,
    evaluation_report,
    evaluation_settings,
    flag,
    given,
    model_spec_from_args,
    require_folder,
    require_writable_file,
    run_options_from_args,
)


def build_parser(*, prog: str = "python -m gem_sam.evaluate") -> argparse.ArgumentParser:
    """The options; ``prog`` names the command in the help (``gem-sam evaluate`` or the module)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "p-mIoU on OpenImages V7 point labels (Table 3 of the GEM paper) for GEM, GEM-SAM and the "
            "training-free baselines. Per image, each class with a yes-point is predicted from its display "
            "name; TP / FP / FN count the yes- and no-points inside and outside the predicted mask."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--points", required=True, metavar="CSV", help="oidv7-*-annotations-point-labels.csv")
    data.add_argument("--classes", required=True, metavar="CSV", help="oidv7-class-descriptions.csv")
    data.add_argument("--images", required=True, metavar="DIR", help="folder with {ImageId}.jpg")
    data.add_argument("--limit", type=int, default=None, help="evaluate N images drawn with --seed (default: all)")
    data.add_argument("--seed", type=int, default=0, help="seed of the --limit draw (default: 0)")
    data.add_argument("--image-ids", default=None, metavar="FILE", help="evaluate only these ids (one per line)")
    data.add_argument("--out", default="report.json", metavar="FILE", help="report JSON (default: report.json)")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    data.add_argument(
        "--restart", action="store_true", help="discard the per-image results kept beside --out by an earlier run"
    )

    method = parser.add_argument_group("method")
    method.add_argument("--method", default="gem", choices=EVAL_METHODS, help="row of Table 3 (default: gem)")
    method.add_argument(
        "--sam-rule",
        default=None,
        choices=SAM_RULES,
        help="gem-sam: label = each mask takes its best class and a class's prediction is the union of its "
        "masks (uncovered pixels predict nothing); mean = each mask takes the mean of the scaled GEM map "
        f"inside it (default: {SamRefinement().rule})",
    )
    method.add_argument(
        "--sam-overlap",
        default=None,
        choices=OVERLAP_RULES,
        help="gem-sam with --sam-rule mean: pixel covered by several masks "
        f"takes the largest mask mean or the smallest mask's (default: {SamRefinement().overlap})",
    )
    method.add_argument(
        "--sam-uncovered",
        default=None,
        choices=UNCOVERED_RULES,
        help="gem-sam with --sam-rule mean: pixels no mask covers keep the GEM map value or get 0 "
        f"(default: {SamRefinement().uncovered})",
    )
    add_scorer_arguments(parser, with_method=False)
    add_generator_arguments(parser)
    device = parser.add_argument_group("device and Ray")
    add_device_argument(device)
    add_ray_arguments(device, what="evaluate")
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def sam_refinement_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SamRefinement:
    """The gem-sam rule of the command line; refuses rule options that would have no effect."""
    chosen = given(args, ["sam_rule", "sam_overlap", "sam_uncovered"])
    if chosen and args.method != "gem-sam":
        parser.error(f"{', '.join(map(flag, chosen))}: only used by --method gem-sam, not {args.method}")
    refinement = SamRefinement(**{name.removeprefix("sam_"): value for name, value in chosen.items()})
    mean_only = [flag(name) for name in ("sam_overlap", "sam_uncovered") if name in chosen]
    if mean_only and refinement.rule != "mean":
        parser.error(f"{', '.join(mean_only)}: only used by --sam-rule mean, not {refinement.rule}")
    return refinement


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.evaluate") -> int:
    parser = build_parser(prog=prog)
    args = parser.parse_args(argv)
    refinement = sam_refinement_from_args(args, parser)
    gem_sam = args.method == "gem-sam"
    try:
        require_folder(args.images, option="--images")
        for option, path in (("--points", args.points), ("--classes", args.classes)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{option} file {path!r} does not exist")
        require_writable_file(args.out, option="--out")
        image_ids = None
        if args.image_ids is not None:
            lines = Path(args.image_ids).read_text(encoding="utf-8").split()
            image_ids = [line.strip() for line in lines if line.strip()]
        model = model_spec_from_args(args, method="gem" if gem_sam else args.method, with_generator=gem_sam)
        config = model.scorer_config()
        settings = evaluation_settings(args, model, gem_sam=gem_sam)
        if gem_sam:
            settings["sam_refinement"] = refinement.settings()
        predictor, device = None, f"Ray workers ({args.ray_workers or 'one per GPU, else 1'})"
        if args.ray is None:
            scorer, generator = model.build()
            predictor = PointPredictor(
                method=args.method, scorer=scorer, mask_generator=generator, refinement=refinement
            )
            device = device_name(scorer.device)
        results = evaluate_points(
            predictor,
            model=model,
            method=args.method,
            refinement=refinement,
            points_csv=args.points,
            classes_csv=args.classes,
            images_dir=args.images,
            image_ids=image_ids,
            limit=args.limit,
            seed=args.seed,
            settings={key: value for key, value in settings.items() if key != "scorer"},
            **run_options_from_args(args),
        )
    except (*USER_ERRORS, RunMismatchError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    variant = method_variant(config, refinement if gem_sam else None)
    report = evaluation_report(args, variant=variant, device=device, settings=settings, results=results)
    write_json_atomic(report, Path(args.out))
    print(markdown_table(report))
    if results["missing_images"]:
        print(f"{len(results['missing_images'])} image(s) listed in the CSV were not found in {args.images}")
    print(f"wrote {args.out}")
    return 0
