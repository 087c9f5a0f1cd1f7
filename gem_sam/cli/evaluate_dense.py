"""Command line: zero-shot semantic segmentation mIoU on Pascal VOC, Pascal Context and ADE20K
(the paper's Tables 1, 2, 4 and 6).

    python -m gem_sam.evaluate_dense --dataset voc --root VOCdevkit/VOC2012 --method gem --out report.json

The evaluation itself is ``gem_sam.evaluation.dense``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_json_atomic
from ..evaluation.dense import (
    DATASETS,
    DENSE_METHODS,
    DenseEvalTask,
    clip_patch_size,
    differences_from_paper,
    evaluate_dense,
    markdown_row,
)
from ..evaluation.dense_datasets import BACKGROUND_THRESHOLD
from ..evaluation.dense_predictor import SlidingWindow
from ..evaluation.points import device_name, method_variant
from ..naming.vocabulary import read_vocabulary
from ..run_store import RunMismatchError
from .args import (
    USER_ERRORS,
    add_device_argument,
    add_generator_arguments,
    add_ray_arguments,
    add_scorer_arguments,
    evaluation_report,
    evaluation_settings,
    model_spec_from_args,
    require_writable_file,
    run_options_from_args,
)


def build_parser(*, prog: str = "python -m gem_sam.evaluate_dense") -> argparse.ArgumentParser:
    """The options; ``prog`` names the command in the help (``gem-sam evaluate-dense`` or the module)."""
    slide = SlidingWindow()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Zero-shot semantic segmentation mIoU on Pascal VOC 2012 val (20 classes + background by a 0.85 "
            "softmax threshold), Pascal Context (59 classes) or ADE20K val (150 classes), the GEM paper's "
            "protocol: shorter side 448, sliding windows, bilinear upsampling to the labels."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, choices=DATASETS)
    data.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="VOC2012 folder (voc), VOC2010 folder with SegmentationClassContext (context), "
        "ADEChallengeData2016 (ade20k)",
    )
    data.add_argument(
        "--class-names",
        metavar="FILE",
        help="replace the prompted class names: a vocabulary file with the dataset's classes in label order "
        "(for VOC the 20 objects), each its own prompt or 'class: prompt, prompt'; background prompts compete "
        "with the classes (see gem-sam label --vocab)",
    )
    data.add_argument("--limit", type=int, default=None, help="evaluate N images drawn with --seed (default: all)")
    data.add_argument("--seed", type=int, default=0, help="seed of the --limit draw (default: 0)")
    data.add_argument("--out", default="report.json", metavar="FILE", help="report JSON (default: report.json)")
    data.add_argument("--restart", action="store_true", help="discard the per-image results of an earlier run")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    method = parser.add_argument_group("method and protocol")
    method.add_argument("--method", default="gem", choices=DENSE_METHODS, help="(default: gem)")
    method.add_argument(
        "--window", type=int, default=slide.window, help=f"sliding window side in pixels (default: {slide.window})"
    )
    method.add_argument(
        "--stride", type=int, default=slide.stride, help=f"sliding window stride in pixels (default: {slide.stride})"
    )
    add_scorer_arguments(parser, with_method=False)
    add_generator_arguments(parser)
    device = parser.add_argument_group("device and Ray")
    add_device_argument(device)
    add_ray_arguments(device, what="evaluate")
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.evaluate_dense") -> int:
    args = build_parser(prog=prog).parse_args(argv)
    gem_sam = args.method == "gem-sam"
    try:
        require_writable_file(args.out, option="--out")
        vocabulary = read_vocabulary(args.class_names) if args.class_names else None
        model = model_spec_from_args(args, method="gem" if gem_sam else args.method, with_generator=gem_sam)
        config = model.scorer_config()
        # the window and stride that run, on the ViT's patch grid
        slide = SlidingWindow(window=args.window, stride=args.stride).on_patch_grid(clip_patch_size(args.clip_model))
        task = DenseEvalTask(dataset=args.dataset, root=args.root, vocabulary=vocabulary, slide=slide, model=model)
        dataset = task.load()
        settings: dict[str, Any] = {
            "dataset": args.dataset,
            "root": str(Path(args.root).resolve()),
            "class_names": list(dataset.class_names),
            **({"prompts": vocabulary.settings()} if vocabulary is not None and not vocabulary.is_flat else {}),
            "protocol": {
                **dataclasses.asdict(slide),
                "short_side": config.short_side,
                "max_long_side": config.max_long_side,
                "background_threshold": BACKGROUND_THRESHOLD if dataset.has_background else None,
            },
            **evaluation_settings(args, model, gem_sam=gem_sam),
        }
        if gem_sam:
            settings["sam_rule"] = "label"
        device = f"Ray workers ({args.ray_workers or 'one per GPU, else 1'})"
        if args.ray is None:
            scorer, generator = model.build()
            task = dataclasses.replace(task, predictor=task.predictor_for(dataset, scorer, generator))
            device = device_name(scorer.device)
        results = evaluate_dense(
            task,
            limit=args.limit,
            seed=args.seed,
            settings={key: value for key, value in settings.items() if key != "scorer"},
            **run_options_from_args(args),
        )
    except (*USER_ERRORS, RunMismatchError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    variant = method_variant(config, None) + ("; gem-sam rule label" if gem_sam else "")
    report = evaluation_report(args, variant=variant, device=device, settings=settings, results=results)
    report["differs_from_paper"] = differences_from_paper(
        method=args.method,
        clip_model=args.clip_model,
        pretrained=args.pretrained,
        config=config,
        slide=slide,
        class_names=bool(args.class_names),
    )
    write_json_atomic(report, Path(args.out))
    print(markdown_row(report))
    skipped = len(results["missing"]) + len(results["unreadable"])
    if skipped:
        print(f"{skipped} image(s) skipped (missing or unreadable files); listed in the report")
    print(f"wrote {args.out}")
    return 0
