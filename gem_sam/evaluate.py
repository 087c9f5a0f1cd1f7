"""Command line: p-mIoU on OpenImages V7 point labels, the paper's Table 3.

    python -m gem_sam.evaluate --points oidv7-val-annotations-point-labels.csv \\
        --classes oidv7-class-descriptions.csv --images val_images/ --method gem-sam --out report.json

Images are read as ``{ImageId}.jpg`` from ``--images``. Per image, the classes with at least one
yes-point are evaluated, prompted with their display names (see ``gem_sam.point_metric``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .cli_args import (
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
from .coco import write_json_atomic
from .eval_engine import ModelSpec, evaluate_selected
from .images import ImageReadError, load_image
from .openimages import list_image_ids, read_class_descriptions, read_point_labels, select_image_ids
from .point_metric import PointIoU, count_points
from .point_predictor import (
    EVAL_METHODS,
    OVERLAP_RULES,
    SAM_RULES,
    UNCOVERED_RULES,
    PointPredictor,
    SamRefinement,
)
from .run_store import RunMismatchError
from .scorer import ScorerConfig

# Table 3 of the paper: (p-mIoU, fps on one A6000) by (method, model family).
PAPER_TABLE3: dict[tuple[str, str], tuple[float, float]] = {
    ("clip", "clip"): (27.6, 42.10),
    ("maskclip", "clip"): (42.0, 42.43),
    ("clipsurgery", "clip"): (47.8, 38.47),
    ("gem", "clip"): (50.9, 37.24),
    ("gem", "metaclip"): (51.9, 37.24),
    ("gem-sam", "clip"): (53.4, 0.45),
    ("gem-sam", "metaclip"): (55.2, 0.45),
}


def model_family(pretrained: str) -> str:
    return "metaclip" if "metaclip" in pretrained.lower() else "clip"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class PointEvalTask:
    """Evaluating images of the point set; ``build()`` loads the models (from ``model``, unless a
    ready ``predictor`` is given, which stays in this process) and the points of ``image_ids``."""

    points_csv: str
    classes_csv: str
    images_dir: str
    image_ids: tuple[str, ...]
    model: ModelSpec | None = None
    method: str = "gem"
    refinement: SamRefinement = SamRefinement()
    predictor: Any = None  # an object with PointPredictor's ``inside``

    def build(self) -> Callable[[str], dict[str, Any]]:
        predictor = self.predictor
        if predictor is None:
            scorer, generator = self.model.build()
            predictor = PointPredictor(
                method=self.method, scorer=scorer, mask_generator=generator, refinement=self.refinement
            )
        class_names = read_class_descriptions(self.classes_csv)
        points = read_point_labels(self.points_csv, image_ids=list(self.image_ids), classes=class_names)

        def evaluate(image_id: str) -> dict[str, Any]:
            labels = points.get(image_id)
            if labels is None or not labels.evaluated_classes():
                return {"status": "no_classes"}
            path = Path(self.images_dir) / f"{image_id}.jpg"
            if not path.exists():
                return {"status": "missing"}
            try:
                image = load_image(path)
            except ImageReadError as error:
                return {"status": "unreadable", "reason": str(error)}
            mids = labels.evaluated_classes()
            start = time.perf_counter()
            inside = predictor.inside(image, [class_names[mid] for mid in mids], labels.x, labels.y)  # [C, P]
            seconds = time.perf_counter() - start
            counts = []
            for row, mid in enumerate(mids):
                of_class = [index for index, label in enumerate(labels.label) if label == mid]
                counts.append([mid, *count_points(inside[row, of_class], labels.answer[of_class])])
            return {"status": "ok", "counts": counts, "seconds_model": seconds}

        return evaluate


def evaluate_points(
    predictor: Any = None,
    *,
    points_csv: str,
    classes_csv: str,
    images_dir: str,
    image_ids: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    model: ModelSpec | None = None,
    method: str = "gem",
    refinement: SamRefinement = SamRefinement(),
    **run_options: Any,
) -> dict[str, Any]:
    """Evaluate the selected images and return the metric and timing part of the report.

    Models: a ready ``predictor`` (this process), or a ``model`` spec built where the images are
    evaluated (needed with Ray). ``run_options`` are those of ``eval_engine.evaluate_selected``
    (``out_path``: keep per-image counts in ``<out_path>.records/`` so an interrupted evaluation
    resumes; ``use_ray``, ``workers``, ``progress``, ...). The report is the same as an
    uninterrupted single-process run's.
    """
    available = list_image_ids(points_csv)
    if image_ids is not None:
        unknown = sorted(set(image_ids) - set(available))
        if unknown:
            raise ValueError(f"{len(unknown)} image id(s) are not in {points_csv!r}, e.g. {unknown[0]!r}")
        available = sorted(set(image_ids))
    selected = select_image_ids(available, limit=limit, seed=seed)
    if predictor is None and model is None:
        raise ValueError("give a predictor or a model spec")
    task = PointEvalTask(
        points_csv=points_csv,
        classes_csv=classes_csv,
        images_dir=images_dir,
        image_ids=tuple(selected),
        model=model,
        method=method,
        refinement=refinement,
        predictor=predictor,
    )
    metric = PointIoU()

    def add(record: dict[str, Any]) -> str | None:
        for mid, *counts in record.get("counts", []):
            metric.add(mid, tuple(counts))
        return f"p_miou={100 * metric.p_miou:.1f}" if metric.per_class else None

    records, total_seconds = evaluate_selected(task, selected, on_record=add, **run_options)
    metric = PointIoU()  # the report: every record, in image order
    for record in records:
        add(record)
    evaluated = sum(record["status"] == "ok" for record in records)
    model_seconds = sum(record.get("seconds_model", 0.0) for record in records)
    return {
        "p_miou": 100 * metric.p_miou,
        "p_miou_per_pair": 100 * metric.p_miou_per_pair,
        "n_images": evaluated,
        "n_classes": metric.n_classes,
        "n_pairs": len(metric.pair_ious),
        "n_selected": len(selected),
        "missing_images": [i for i, r in zip(selected, records, strict=True) if r["status"] == "missing"],
        "unreadable_images": [
            {"image_id": i, "reason": r["reason"]}
            for i, r in zip(selected, records, strict=True)
            if r["status"] == "unreadable"
        ],
        "fps": evaluated / total_seconds if total_seconds and evaluated else None,
        "fps_model": evaluated / model_seconds if model_seconds and evaluated else None,
        "seconds": total_seconds,
    }


def method_variant(config: ScorerConfig, refinement: SamRefinement | None) -> str:
    """Which variant of the method ran, in words (dense path, prompts, gem-sam rule)."""
    templates = config.templates
    prompts = f"prompt {templates[0]!r}" if len(templates) == 1 else f"{len(templates)} prompt templates averaged"
    parts = [config.path.describe(), prompts]
    if refinement is not None:
        parts.append(f"gem-sam rule {refinement.rule}")
    return "; ".join(parts)


def markdown_table(report: dict[str, Any]) -> str:
    paper = PAPER_TABLE3.get((report["method"], model_family(report["model"]["pretrained"])))
    paper_miou, paper_fps = (f"{paper[0]:.1f}", f"{paper[1]:.2f}") if paper else ("-", "-")
    fps = f"{report['fps']:.2f}" if report["fps"] else "-"
    fps_model = f"{report['fps_model']:.2f}" if report["fps_model"] else "-"
    return "\n".join(
        [
            "| method | model | images | p-mIoU | p-mIoU per pair | fps (all / model), device | "
            "paper p-mIoU | paper fps (A6000) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {report['method']} ({report['method_variant']}) | "
            f"{report['model']['clip_model']} {report['model']['pretrained']} | "
            f"{report['n_images']} | {report['p_miou']:.1f} | {report['p_miou_per_pair']:.1f} | "
            f"{fps} / {fps_model}, {report['device']} | {paper_miou} | {paper_fps} |",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gem_sam.evaluate",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    sys.exit(main())
