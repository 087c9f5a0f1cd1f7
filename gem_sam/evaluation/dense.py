"""Zero-shot semantic segmentation mIoU on Pascal VOC, Pascal Context and ADE20K (the paper's Tables
1, 2, 4 and 6): the evaluation task, its report, and when a run is in the paper's setting.

The protocol is in ``dense_predictor`` and the layouts in ``dense_datasets``. Per-image confusion
counts are kept beside the report (``report.json.records/``), so an interrupted evaluation resumes,
with one process or with Ray; the report equals an uninterrupted run's. The command line is
``gem_sam.cli.evaluate_dense``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import open_clip

from ..images import ImageReadError, load_image
from ..naming.scorer import GemScorer, scorer_config
from ..naming.vocabulary import Vocabulary
from ..sam import GridMaskGenerator
from .confusion import confusion_matrix, from_sparse, mean_iou, per_class_iou, pixel_accuracy, to_sparse
from .dense_datasets import BACKGROUND_THRESHOLD, DenseDataset, load_dense_dataset
from .dense_predictor import DensePredictor, SlidingWindow
from .engine import ModelSpec, evaluate_selected
from .openimages import select_image_ids

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
    slide: SlidingWindow
    vocabulary: Vocabulary | None = None  # classes (in label order) and their prompts; None: the dataset's names
    model: ModelSpec | None = None
    predictor: Any = None  # an object with DensePredictor's ``predict`` (stays in this process)

    def load(self) -> DenseDataset:
        classes = self.vocabulary.classes if self.vocabulary is not None else None
        return load_dense_dataset(self.dataset, self.root, class_names=classes)

    def predictor_for(
        self, dataset: DenseDataset, scorer: GemScorer, generator: GridMaskGenerator | None
    ) -> DensePredictor:
        return DensePredictor(
            scorer=scorer,
            vocabulary=self.vocabulary or dataset.class_names,
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
