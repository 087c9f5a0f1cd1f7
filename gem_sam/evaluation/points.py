"""p-mIoU on OpenImages V7 point labels, the paper's Table 3: the evaluation task and its report.

Images are read as ``{ImageId}.jpg`` from the images folder. Per image, the classes with at least one
yes-point are evaluated, prompted with their display names (see ``point_metric``). The command line is
``gem_sam.cli.evaluate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..images import ImageReadError, load_image
from ..naming.scorer import ScorerConfig
from .engine import ModelSpec, evaluate_selected
from .openimages import list_image_ids, read_class_descriptions, read_point_labels, select_image_ids
from .point_metric import PointIoU, count_points
from .point_predictor import PointPredictor, SamRefinement

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
