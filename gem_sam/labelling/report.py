"""A run report: how a labelled dataset is spread over classes, scores and images.

Written beside the COCO file as ``<out>.report.json`` and, when matplotlib is installed (the
``report`` extra), ``<out>.report.png``. It shows at a glance whether a class is starved (few masks)
or swamped (many masks of low score), how sure the names are (the margin between each mask's two best
classes, ``naming.uncertainty``), which images to review first, and which files were skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..naming.uncertainty import annotations_review_priority
from .coco import LabelledImage

SCORE_BINS = 10  # histogram bins of the scores and margins over [0, 1]
MAX_CLASSES_DRAWN = 60  # the picture shows at most this many classes, those with the most masks
REVIEW_FIRST_LISTED = 20  # images of highest review priority named in the report


def histogram(values: Sequence[float], *, bins: int, upper: float) -> list[int]:
    """Counts of ``values`` in ``bins`` equal bins over [0, upper] (the last bin closed)."""
    counts, _ = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(0.0, upper))
    return [int(count) for count in counts]


def quantiles(values: Sequence[float]) -> dict[str, float] | None:
    """min, 10th percentile, median, 90th percentile and max; None for no values."""
    if not len(values):
        return None
    points = np.quantile(np.asarray(values, dtype=float), [0.0, 0.1, 0.5, 0.9, 1.0])
    return {name: float(value) for name, value in zip(("min", "p10", "median", "p90", "max"), points, strict=True)}


@dataclass
class RunReport:
    """Accumulates per-image results; ``to_json`` gives the report."""

    vocabulary: Sequence[str]  # the classes, in category order
    background_prompts: Sequence[str] = ()
    scores: list[list[float]] = field(init=False)  # per class, the score of every mask
    images_with_class: list[int] = field(init=False)  # per class, images with at least one mask
    masks_per_image: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    background: dict[str, int] = field(init=False)  # per background prompt, the masks it won (not written)
    margins: list[float] = field(default_factory=list)  # every mask's margin between its two best classes
    priorities: list[tuple[float, str]] = field(default_factory=list)  # (review priority, file name) per image

    def __post_init__(self) -> None:
        self.scores = [[] for _ in self.vocabulary]
        self.images_with_class = [0 for _ in self.vocabulary]
        self.background = {prompt: 0 for prompt in self.background_prompts}

    def add(self, image: LabelledImage) -> None:
        self.masks_per_image.append(len(image.annotations))
        for prompt, count in image.background.items():
            self.background[prompt] = self.background.get(prompt, 0) + count
        for class_index in {annotation["class_index"] for annotation in image.annotations}:
            self.images_with_class[class_index] += 1
        for annotation in image.annotations:
            self.scores[annotation["class_index"]].append(float(annotation["score"]))
        self.margins += [float(annotation["margin"]) for annotation in image.annotations if "margin" in annotation]
        self.priorities.append((annotations_review_priority(image.annotations), image.file_name))

    def passing(self, images: Iterable[LabelledImage]) -> Iterator[LabelledImage]:
        """Yield ``images`` unchanged, adding each to the report on the way."""
        for image in images:
            self.add(image)
            yield image

    def to_json(self) -> dict[str, Any]:
        per_image = self.masks_per_image
        most = max(per_image, default=0)
        return {
            "n_images": len(per_image),
            "n_masks": int(sum(per_image)),
            "n_skipped": len(self.skipped),
            "classes": [
                {
                    "id": index + 1,
                    "name": name,
                    "masks": len(self.scores[index]),
                    "images": self.images_with_class[index],
                    "score": quantiles(self.scores[index]),
                    "score_histogram": histogram(self.scores[index], bins=SCORE_BINS, upper=1.0),
                }
                for index, name in enumerate(self.vocabulary)
            ],
            "score_histogram_edges": [round(i / SCORE_BINS, 6) for i in range(SCORE_BINS + 1)],
            "masks_per_image": {
                **(quantiles(per_image) or {}),
                "mean": float(np.mean(per_image)) if per_image else None,
                "images_without_masks": sum(1 for count in per_image if count == 0),
                "histogram": [per_image.count(count) for count in range(most + 1)],  # index = masks in an image
            },
            "margin": quantiles(self.margins),
            "margin_histogram": histogram(self.margins, bins=SCORE_BINS, upper=1.0),
            "review_priority": quantiles([priority for priority, _ in self.priorities]),
            "review_first": [
                {"file_name": name, "priority": priority}
                for priority, name in sorted(self.priorities, key=lambda item: -item[0])[:REVIEW_FIRST_LISTED]
            ],
            "skipped": [{"file_name": name, "reason": reason} for name, reason in self.skipped],
            "dropped_as_background": {"masks": sum(self.background.values()), "by_prompt": dict(self.background)},
        }


def drawn_classes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The classes the picture shows: most masks first (ties in vocabulary order), at most
    ``MAX_CLASSES_DRAWN``, so that the figure's height stays bounded whatever the vocabulary."""
    return sorted(report["classes"], key=lambda entry: -entry["masks"])[:MAX_CLASSES_DRAWN]


def picture_note(report: dict[str, Any]) -> str | None:
    """Why the picture leaves classes out, or None when it shows them all."""
    total = len(report["classes"])
    if total <= MAX_CLASSES_DRAWN:
        return None
    return (
        f"the report picture shows the {MAX_CLASSES_DRAWN} classes with the most masks, of {total} "
        "(all are in the report JSON)"
    )


def save_report_png(report: dict[str, Any], path: str | os.PathLike) -> bool:
    """Draw the report as one PNG (masks per class, scores per class, masks per image, margins); with a
    large vocabulary, only the classes of ``drawn_classes``.

    Returns False, writing nothing, when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    classes = drawn_classes(report)
    names = [entry["name"] for entry in classes]
    height = max(4.0, 0.28 * len(names) + 1.5)
    figure, (counts_axis, scores_axis, images_axis, margin_axis) = plt.subplots(
        1, 4, figsize=(21, height), gridspec_kw={"width_ratios": [1, 1, 1, 1]}
    )
    positions = np.arange(len(names))
    counts_axis.barh(positions, [entry["masks"] for entry in classes], color="#4c72b0")
    counts_axis.set_yticks(positions, names)
    counts_axis.invert_yaxis()
    counts_axis.set_xlabel("masks")
    counts_axis.set_title("masks per class")

    # score distribution per class: a horizontal bar from p10 to p90 with the median marked
    for row, entry in enumerate(classes):
        score = entry["score"]
        if score is None:
            continue
        scores_axis.plot([score["min"], score["max"]], [row, row], color="#bbbbbb", linewidth=1)
        scores_axis.plot([score["p10"], score["p90"]], [row, row], color="#dd8452", linewidth=6)
        scores_axis.plot([score["median"]], [row], marker="|", color="black", markersize=12)
    scores_axis.set_yticks(positions, [""] * len(names))
    scores_axis.set_ylim(len(names) - 0.5, -0.5)
    scores_axis.set_xlim(0, 1)
    scores_axis.set_xlabel("score (min-max, p10-p90, median)")
    scores_axis.set_title("scores per class")

    per_image = report["masks_per_image"]["histogram"]
    images_axis.bar(np.arange(len(per_image)), per_image, color="#55a868", width=1.0)
    images_axis.set_xlabel("masks in an image")
    images_axis.set_ylabel("images")
    images_axis.set_title("masks per image")
    images_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    images_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    margins = report.get("margin_histogram") or [0] * SCORE_BINS
    edges = np.asarray(report["score_histogram_edges"])
    margin_axis.bar(edges[:-1], margins, width=np.diff(edges), align="edge", color="#c44e52", edgecolor="white")
    margin_axis.set_xlim(0, 1)
    margin_axis.set_xlabel("margin: best minus second-best class probability (0: a tie)")
    margin_axis.set_ylabel("masks")
    margin_axis.set_title("how sure the names are")
    margin_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    shown = (
        f" (the {len(classes)} classes with the most masks, of {len(report['classes'])})"
        if picture_note(report)
        else ""
    )
    dropped = report.get("dropped_as_background", {}).get("masks", 0)
    background = f", {dropped} won by background prompts" if dropped else ""
    figure.suptitle(
        f"{report['n_images']} images, {report['n_masks']} masks{background}, "
        f"{report['n_skipped']} skipped file(s){shown}"
    )
    figure.tight_layout()
    figure.savefig(Path(path), dpi=100)
    plt.close(figure)
    return True
