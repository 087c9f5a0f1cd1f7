"""The auto-labelling pipeline: SAM grid masks named by GEM, one image or a whole folder."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import write_json_atomic
from ..images import IMAGE_EXTENSIONS, ImageReadError, load_image
from ..mask_ops import decoded_mask_chunks, pool_in_masks, rle_bbox_xywh
from ..naming.mask_labels import label_masks
from ..naming.scorer import GemScorer
from ..naming.vocabulary import Vocabulary, as_vocabulary
from ..paths import overlay_names
from ..run_store import RunStore, file_fingerprint, image_key
from ..sam import GridMaskGenerator
from .coco import LabelledImage, write_coco_streaming
from .config import LabelConfig
from .overlay import save_overlay
from .quality import select_masks
from .report import RunReport, picture_note, save_report_png
from .run_paths import check_run_paths, find_run_images


@dataclass(frozen=True)
class NamedMasks:
    """One image's named masks: the annotations that are written, and how many masks each background
    prompt won (those are not written)."""

    annotations: list[dict[str, Any]]
    background: dict[str, int] = field(default_factory=dict)  # background prompt -> masks it won


class AutoLabeller:
    """Labels an image: class-agnostic SAM masks, each named with the GEM similarity inside it.

    ``vocabulary``: a ``Vocabulary`` (classes with several prompts, background prompts) or a list of
    class names (each its own prompt). The text embeddings of every prompt are computed once, here.
    """

    def __init__(
        self,
        *,
        scorer: GemScorer,
        mask_generator: GridMaskGenerator,
        vocabulary: Vocabulary | Sequence[str],
        config: LabelConfig = LabelConfig(),
    ) -> None:
        self.scorer = scorer
        self.mask_generator = mask_generator
        self.vocabulary = as_vocabulary(vocabulary)
        self.config = config
        self.text = scorer.encode_text(self.vocabulary.all_prompts)  # [P, E]

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes written, in category order (without background)."""
        return self.vocabulary.classes

    def similarity(self, image_rgb: np.ndarray) -> torch.Tensor:
        """[P, h, w] patch-level cosine similarity of the image with every prompt (``all_prompts``)."""
        return self.scorer.patch_similarity(self.scorer.preprocess(image_rgb), self.text)[0]

    def label(self, image_rgb: np.ndarray) -> list[dict[str, Any]]:
        """HxWx3 uint8 RGB -> annotations (``class_index``, COCO RLE ``segmentation``, ``area``,
        ``bbox`` XYWH, ``score``, ``similarity``, ``margin``, ``entropy``, ``predicted_iou``,
        ``stability_score``), in SAM's mask order, after background removal and the label config's
        filters. ``naming.uncertainty.review_priority`` ranks images by their masks' margins."""
        return self.name_masks(image_rgb, self.mask_generator.generate(image_rgb)).annotations

    def name_masks(self, image_rgb: np.ndarray, records: list[dict[str, Any]]) -> NamedMasks:
        """Name the mask records of ``image_rgb`` (from the mask generator); see ``label``.

        Empty masks (which SAM's filters let through at ``stability_score_thresh`` 0) are dropped:
        they have no pixels to name, and COCO has no use for an instance of area 0. Masks a background
        prompt wins are dropped and counted; then ``min_score`` and the quality controls apply.
        """
        records = [record for record in records if record["area"] > 0]
        if not records:
            return NamedMasks(annotations=[])
        similarity = self.similarity(image_rgb)  # [P, h, w]
        pooled = torch.cat(
            [pool_in_masks(similarity, masks) for _, masks in decoded_mask_chunks(records, size_hw=image_rgb.shape[:2])]
        )  # [M, P]
        labels = label_masks(
            pooled, logit_scale=self.scorer.logit_scale, vocabulary=self.vocabulary, min_score=self.config.min_score
        )
        prompts = self.vocabulary.all_prompts
        background = Counter(prompts[int(index)] for index in labels.prompt_index[labels.background])
        annotations = [
            {
                "class_index": int(labels.class_index[i]),
                "segmentation": record["segmentation"],
                "area": int(record["area"]),
                "bbox": rle_bbox_xywh(record["segmentation"]),  # COCO's extent, not SAM's inclusive box
                "score": float(labels.score[i]),
                "similarity": float(labels.similarity[i]),
                "margin": float(labels.margin[i]),
                "entropy": float(labels.entropy[i]),
                "predicted_iou": float(record["predicted_iou"]),
                "stability_score": float(record["stability_score"]),
            }
            for i, record in enumerate(records)
            if bool(labels.keep[i])
        ]
        if not self.config.quality.active:
            return NamedMasks(annotations=annotations, background=dict(background))
        kept = select_masks(
            classes=[annotation["class_index"] for annotation in annotations],
            scores=[annotation["score"] for annotation in annotations],
            segmentations=[annotation["segmentation"] for annotation in annotations],
            similarities=[annotation["similarity"] for annotation in annotations],
            controls=self.config.quality,
        )
        return NamedMasks(annotations=[annotations[i] for i in kept], background=dict(background))

    def label_file(self, images_dir: Path, file_name: Path, *, overlay_path: Path | None = None) -> LabelledImage:
        """Label ``images_dir / file_name``; with ``overlay_path``, also write its overlay (JPEG) there.

        Raises ``ImageReadError`` when the file is not a readable image.
        """
        path = images_dir / file_name
        try:
            fingerprint = file_fingerprint(path)  # before reading: an edit during the run changes it
        except OSError as error:
            raise ImageReadError(f"cannot read the file ({error})") from error
        image = load_image(path)
        named = self.name_masks(image, self.mask_generator.generate(image))
        labelled = LabelledImage(
            file_name=file_name.as_posix(),
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            annotations=named.annotations,
            fingerprint=fingerprint,
            background=named.background,
        )
        if overlay_path is not None:
            save_overlay(image, labelled.annotations, self.classes, path=overlay_path)
        return labelled


def save_labelled(store: RunStore, labelled: LabelledImage) -> str:
    """Save an image's result under its key (path and fingerprint); returns the key."""
    if labelled.fingerprint is None:
        raise ValueError(f"{labelled.file_name!r}: a stored result needs the fingerprint of its file")
    key = image_key(labelled.file_name, labelled.fingerprint)
    store.save_record(key, labelled.to_json())
    return key


def label_and_store(
    labeller: AutoLabeller, store: RunStore, images_dir: Path, file_name: Path, *, overlay_path: Path | None
) -> tuple[str | None, str | None]:
    """Label one file and save its record (the overlay first, so a saved record means done).

    Returns ``(record key, None)`` on success, or ``(None, why the file was skipped)``.
    """
    try:
        return save_labelled(store, labeller.label_file(images_dir, file_name, overlay_path=overlay_path)), None
    except ImageReadError as error:
        return None, str(error)


def stored_key(store: RunStore, images_dir: Path, file_name: Path) -> tuple[str | None, str | None]:
    """``(key, None)`` when ``store`` holds a result of this very file (same path, size and
    modification time), ``(None, None)`` when it must be labelled, ``(None, why)`` when it cannot be
    read at all."""
    try:
        key = image_key(file_name.as_posix(), file_fingerprint(images_dir / file_name))
    except OSError as error:
        return None, f"cannot read the file ({error})"
    return (key, None) if store.has(key) else (None, None)


@dataclass
class RunSummary:
    """What a folder run did."""

    labelled: int = 0  # images labelled in this run
    resumed: int = 0  # images whose results an earlier run had already written
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    masks: int = 0  # annotations in the output file
    background: int = 0  # masks that background prompts won, not written
    seconds: float = 0.0  # wall time of the labelling in this run
    report_png: bool = False  # whether the report picture was drawn (needs matplotlib)
    report_notes: list[str] = field(default_factory=list)  # what the picture leaves out, or why it failed

    @property
    def seconds_per_image(self) -> float | None:
        return self.seconds / self.labelled if self.labelled else None

    def lines(self) -> list[str]:
        per_image = f"{self.seconds_per_image:.2f} s per image" if self.labelled else "no image labelled in this run"
        out = [
            f"images labelled: {self.labelled} (plus {self.resumed} from an earlier run)",
            f"images skipped: {len(self.skipped)}",
            f"masks written: {self.masks}",
            *([f"masks won by background prompts (not written): {self.background}"] if self.background else []),
            f"time: {self.seconds:.1f} s, {per_image}",
        ]
        out += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        if not self.report_png and not self.report_notes:
            out.append("report picture not drawn: install matplotlib (pip install 'gem_sam[report]')")
        out += [f"warning: {note}" for note in self.report_notes]
        return out


def prepare_run(
    *,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: dict[str, Any],
    restart: bool,
    overlay_dir: str | os.PathLike | None = None,
) -> tuple[list[Path], RunStore, dict[str, Path] | None]:
    """The images of a folder run (relative paths, sorted), its checked records folder, and each image's
    overlay path (None without ``overlay_dir``); every path is checked first (``check_run_paths``)."""
    check_run_paths(images_dir=images_dir, out_path=out_path, overlay_dir=overlay_dir)
    files = find_run_images(images_dir, out_path)
    if not files:
        raise FileNotFoundError(f"no images found in {str(images_dir)!r} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    store = RunStore(out_path, settings=settings, restart=restart, images_dir=images_dir)
    if overlay_dir is None:
        return files, store, None
    names = overlay_names([file_name.as_posix() for file_name in files])
    return files, store, {name: Path(overlay_dir) / overlay for name, overlay in names.items()}


def finish_run(
    store: RunStore,
    *,
    done: list[str],
    vocabulary: Vocabulary,
    templates: Sequence[str],
    summary: RunSummary,
    settings: dict[str, Any],
    images_dir: str | os.PathLike,
) -> RunSummary:
    """Assemble the COCO file from the records under the keys ``done``; delete the records of files
    that changed or left the folder; write the list of skipped files and the run report
    (``<out>.report.json``, and ``<out>.report.png`` when matplotlib is installed)."""
    report = RunReport(
        vocabulary=vocabulary.classes, background_prompts=vocabulary.background, skipped=list(summary.skipped)
    )
    in_file_order = sorted(done, key=lambda key: key.split("\0")[0])
    info = {"description": "gem_sam", "images_dir": str(Path(images_dir).resolve()), "settings": settings}
    if vocabulary.background:
        info["dropped_as_background"] = report.background  # filled while the records stream
    summary.masks = write_coco_streaming(
        report.passing(LabelledImage.from_json(store.load_record(key)) for key in in_file_order),
        vocabulary.classes,
        store.out_path,
        info=info,
    )
    summary.background = sum(report.background.values())
    write_json_atomic(
        [{"file_name": name, "reason": reason} for name, reason in summary.skipped],
        Path(f"{store.out_path}.skipped.json"),
    )
    store.prune(keep=done)
    report_json = {**report.to_json(), "templates": list(templates)}
    write_json_atomic(report_json, Path(f"{store.out_path}.report.json"))
    try:
        summary.report_png = save_report_png(report_json, Path(f"{store.out_path}.report.png"))
    except Exception as error:  # noqa: BLE001 - a picture must never fail a finished run
        summary.report_notes.append(f"report picture not drawn ({type(error).__name__}: {error}); the rest is written")
    else:
        note = picture_note(report_json)
        if note and summary.report_png:
            summary.report_notes.append(note)
    return summary


def label_folder(
    labeller: AutoLabeller,
    *,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: dict[str, Any],
    restart: bool = False,
    progress: bool = True,
    overlay_dir: str | os.PathLike | None = None,
) -> RunSummary:
    """Label every image under ``images_dir`` and write COCO annotations to ``out_path``.

    Results are kept per image next to the output (see ``RunStore``), so a second call with the
    same settings and folder labels only what is missing or changed. Unreadable images are skipped and reported; the
    list of skipped files is also written to ``<out>.skipped.json``. With ``overlay_dir``, an overlay
    of each labelled image is written there (same relative path, ``.jpg``; ``paths.overlay_names``).
    Outputs that would replace or mix with the photos are refused first (``run_paths``).
    """
    images_dir = Path(images_dir)
    files, store, overlays = prepare_run(
        images_dir=images_dir, out_path=out_path, settings=settings, restart=restart, overlay_dir=overlay_dir
    )
    summary = RunSummary()
    done: list[str] = []
    start = time.perf_counter()
    with tqdm(files, desc="labelling", unit="img", disable=not progress) as bar:
        for file_name in bar:
            key, reason = stored_key(store, images_dir, file_name)
            if key is not None:
                summary.resumed += 1
                done.append(key)
                continue
            if reason is None:
                overlay = overlays[file_name.as_posix()] if overlays else None
                key, reason = label_and_store(labeller, store, images_dir, file_name, overlay_path=overlay)
            if key is None:
                summary.skipped.append((file_name.as_posix(), reason))
                continue
            summary.labelled += 1
            done.append(key)
    summary.seconds = time.perf_counter() - start
    return finish_run(
        store,
        done=done,
        vocabulary=labeller.vocabulary,
        templates=labeller.scorer.config.templates,
        summary=summary,
        settings=settings,
        images_dir=images_dir,
    )
