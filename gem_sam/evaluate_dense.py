"""Command line: zero-shot semantic segmentation mIoU on Pascal VOC, Pascal Context and ADE20K
(the paper's Tables 1, 2, 4 and 6).

    python -m gem_sam.evaluate_dense --dataset voc --root VOCdevkit/VOC2012 --method gem --out report.json

The protocol is in ``gem_sam.dense_predictor`` and the layouts in ``gem_sam.dense_datasets``.
Per-image confusion counts are kept beside ``--out`` (``report.json.records/``), so an interrupted
evaluation resumes, with one process or with ``--ray``; the report equals an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip

from . import __version__
from .cli_args import (
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
from .coco import write_json_atomic
from .confusion import confusion_matrix, from_sparse, mean_iou, per_class_iou, pixel_accuracy, to_sparse
from .dense_datasets import BACKGROUND_THRESHOLD, DenseDataset, load_dense_dataset
from .dense_predictor import DensePredictor, SlidingWindow
from .eval_engine import ModelSpec, evaluate_selected
from .evaluate import device_name, method_variant
from .images import ImageReadError, load_image
from .openimages import select_image_ids
from .run_store import RunMismatchError
from .sam import GridMaskGenerator
from .scorer import GemScorer, scorer_config
from .vocab import read_vocabulary

DATASETS: tuple[str, ...] = ("voc", "context", "ade20k")
DENSE_METHODS: tuple[str, ...] = ("gem", "gem-sam", "clip", "maskclip", "clipsurgery")
# Table 2 of the paper, ViT-B/16: mIoU on (VOC, Context, ADE20K) by (method, model family).
PAPER_TABLE2: dict[tuple[str, str], tuple[float, float, float]] = {
    ("gem", "clip"): (46.2, 32.6, 15.7),
    ("gem", "metaclip"): (46.8, 34.5, 17.1),
    ("maskclip", "clip"): (28.6, 23.8, 10.2),
    ("clipsurgery", "clip"): (41.2, 30.5, 12.9),
    ("clip", "clip"): (10.4, 7.7, 1.7),
}
# The models of Table 2: (open_clip name, pretrained tag) -> model family.
PAPER_MODELS: dict[tuple[str, str], str] = {
    ("ViT-B-16", "openai"): "clip",
    ("ViT-B-16-quickgelu", "metaclip_400m"): "metaclip",
}
# Method options of Table 2's rows that differ from the method's defaults (MaskCLIP: the authors' evaluation).
PAPER_METHOD_OPTIONS: dict[str, dict[str, Any]] = {"maskclip": {"maskclip_variant": "surgery"}}


def differences_from_paper(
    *, method: str, clip_model: str, pretrained: str | None, config: Any, slide: SlidingWindow, class_names: bool
) -> list[str]:
    """The settings of a run that differ from those of a Table 2 row (empty: the paper's setting).

    ``config``: the run's ``ScorerConfig``; ``slide``: the window and stride that ran; ``class_names``:
    whether the prompted class names were replaced."""
    differences = []
    family = PAPER_MODELS.get((clip_model, str(pretrained)))
    if family is None:
        differences.append(f"model {clip_model} {pretrained}")
    if (method, family or "clip") not in PAPER_TABLE2:
        differences.append(f"method {method}")
        return differences
    paper = dataclasses.asdict(scorer_config(method=method, **PAPER_METHOD_OPTIONS.get(method, {})))
    ran = dataclasses.asdict(config)
    differences += [f"{key} {ran['path'][key]!r}" for key in paper["path"] if ran["path"][key] != paper["path"][key]]
    differences += [f"{key} {ran[key]!r}" for key in paper if key != "path" and ran[key] != paper[key]]
    if slide != SlidingWindow():
        differences.append(f"window {slide.window} stride {slide.stride}")
    if class_names:
        differences.append("--class-names")
    return differences


def clip_patch_size(model_name: str) -> int:
    """The patch size of an open_clip ViT, read from its config (no weights loaded)."""
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
    return int(config["vision_cfg"]["patch_size"])


@dataclass(frozen=True)
class DenseEvalTask:
    """Evaluating images of a dense benchmark; ``build()`` loads the models and the dataset."""

    dataset: str
    root: str
    class_names: tuple[str, ...] | None
    slide: SlidingWindow
    model: ModelSpec | None = None
    predictor: Any = None  # an object with DensePredictor's ``predict`` (stays in this process)

    def load(self) -> DenseDataset:
        return load_dense_dataset(self.dataset, self.root, class_names=self.class_names)

    def predictor_for(
        self, dataset: DenseDataset, scorer: GemScorer, generator: GridMaskGenerator | None
    ) -> DensePredictor:
        return DensePredictor(
            scorer=scorer,
            class_names=dataset.class_names,
            background_threshold=BACKGROUND_THRESHOLD if dataset.has_background else None,
            slide=self.slide,
            mask_generator=generator,
        )

    def build(self) -> Callable[[str], dict[str, Any]]:
        dataset = self.load()
        predictor = self.predictor or self.predictor_for(dataset, *self.model.build())
        items = {item.item_id: item for item in dataset.items}

        def evaluate(item_id: str) -> dict[str, Any]:
            item = items[item_id]
            for path in (item.image, item.label):
                if not path.is_file():
                    return {"status": "missing", "reason": f"{path} does not exist"}
            try:
                image = load_image(item.image)
                labels = dataset.read_labels(item)
            except (ImageReadError, OSError, ValueError) as error:
                return {"status": "unreadable", "reason": str(error)}
            if labels.shape != image.shape[:2]:
                return {"status": "unreadable", "reason": f"label {labels.shape} and image {image.shape[:2]} differ"}
            start = time.perf_counter()
            predictions = predictor.predict(image, labels.shape)
            model_seconds = time.perf_counter() - start
            matrix = confusion_matrix(labels, predictions, dataset.n_classes)
            return {
                "status": "ok",
                "confusion": to_sparse(matrix),
                "seconds_model": model_seconds,
                "seconds_metric": time.perf_counter() - start - model_seconds,
            }

        return evaluate


def evaluate_dense(
    task: DenseEvalTask, *, limit: int | None = None, seed: int = 0, **run_options: Any
) -> dict[str, Any]:
    """Evaluate the dataset (or ``limit`` images drawn with ``seed``); the metric and timing part of
    the report. ``run_options`` are those of ``eval_engine.evaluate_selected`` (``out_path`` keeps
    per-image counts in ``<out_path>.records/``; ``use_ray``, ``workers``, ``progress``, ...)."""
    dataset = task.load()
    selected = select_image_ids([item.item_id for item in dataset.items], limit=limit, seed=seed)
    running = np.zeros((dataset.n_classes, dataset.n_classes + 1), dtype=np.int64)

    def add(record: dict[str, Any]) -> str | None:
        if record["status"] != "ok":
            return None
        running[...] += from_sparse(record["confusion"], dataset.n_classes)
        return f"mIoU={100 * mean_iou(running):.1f}"

    records, total_seconds = evaluate_selected(task, selected, on_record=add, **run_options)
    matrix = np.zeros_like(running)  # the report: every record, in image order
    for record in records:
        if record["status"] == "ok":
            matrix += from_sparse(record["confusion"], dataset.n_classes)
    ok = [record for record in records if record["status"] == "ok"]
    ious = per_class_iou(matrix)
    model_seconds = sum(record["seconds_model"] for record in ok)
    return {
        "dataset": dataset.name,
        "miou": 100 * mean_iou(matrix),
        "per_class_iou": {
            name: (None if np.isnan(value) else 100 * float(value))
            for name, value in zip(dataset.metric_class_names, ious, strict=True)
        },
        "pixel_accuracy": 100 * pixel_accuracy(matrix),
        "n_images": len(ok),
        "n_selected": len(selected),
        "missing": [
            {"image_id": i, "reason": r["reason"]}
            for i, r in zip(selected, records, strict=True)
            if r["status"] == "missing"
        ],
        "unreadable": [
            {"image_id": i, "reason": r["reason"]}
            for i, r in zip(selected, records, strict=True)
            if r["status"] == "unreadable"
        ],
        "fps": len(ok) / total_seconds if total_seconds and ok else None,
        "fps_model": len(ok) / model_seconds if model_seconds and ok else None,
        "seconds_per_image": {
            "model": model_seconds / len(ok) if ok else None,
            "metric": sum(record["seconds_metric"] for record in ok) / len(ok) if ok else None,
        },
        "seconds": total_seconds,
    }


def markdown_row(report: dict[str, Any]) -> str:
    """The report as a Markdown table row; the paper's mIoU only beside a run in a Table 2 setting."""
    differences = report["differs_from_paper"]
    paper_miou = "-"
    if not differences:
        family = PAPER_MODELS[(report["model"]["clip_model"], str(report["model"]["pretrained"]))]
        paper_miou = f"{PAPER_TABLE2[(report['method'], family)][DATASETS.index(report['dataset'])]:.1f}"
    fps = f"{report['fps']:.2f}" if report["fps"] else "-"
    lines = [
        "| dataset | method | model | images | mIoU | pixel acc. | fps, device | paper mIoU (not checked here) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {report['dataset']} | {report['method']} ({report['method_variant']}) | "
        f"{report['model']['clip_model']} {report['model']['pretrained']} | {report['n_images']} | "
        f"{report['miou']:.1f} | {report['pixel_accuracy']:.1f} | {fps}, {report['device']} | {paper_miou} |",
    ]
    if differences:
        lines.append(f"no paper number: the settings differ from Table 2's ({'; '.join(differences)})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    slide = SlidingWindow()
    parser = argparse.ArgumentParser(
        prog="python -m gem_sam.evaluate_dense",
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
        "--class-names", metavar="FILE", help="replace the prompted class names: one per line, in label order"
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gem_sam = args.method == "gem-sam"
    try:
        require_writable_file(args.out, option="--out")
        class_names = tuple(read_vocabulary(args.class_names)) if args.class_names else None
        model = model_spec_from_args(args, method="gem" if gem_sam else args.method, with_generator=gem_sam)
        config = model.scorer_config()
        # the window and stride that run, on the ViT's patch grid
        slide = SlidingWindow(window=args.window, stride=args.stride).on_patch_grid(clip_patch_size(args.clip_model))
        task = DenseEvalTask(dataset=args.dataset, root=args.root, class_names=class_names, slide=slide, model=model)
        dataset = task.load()
        settings: dict[str, Any] = {
            "dataset": args.dataset,
            "root": str(Path(args.root).resolve()),
            "class_names": list(dataset.class_names),
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


if __name__ == "__main__":
    sys.exit(main())
