"""Shared test fixtures: small random-init models of the real architectures, saved as real
checkpoint files, and real photos from scikit-image."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gem_sam.sam.parity import ParityReport, check_parity, traced_reference_masks
from gem_sam.sam.sam1_model import SamArchitecture, build_sam_model, register_sam_architecture
from gem_sam.sam.sam2_model import build_sam2_model

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"

# A small open_clip ViT with the real block structure (patch 16, learned positions, CLIP text tower).
TINY_CLIP_NAME = "gem-test-vit-tiny16"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 48, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# A small SAM image encoder; prompt encoder and mask decoder are SAM's own.
TINY_SAM_NAME = "vit_tiny_test"
TINY_SAM = SamArchitecture(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))


def register_clip_config(folder: Path, name: str, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)


def register_tiny_models(config_folder: Path) -> None:
    """Make the tiny test architectures buildable by name in this process."""
    register_clip_config(config_folder, TINY_CLIP_NAME, TINY_CLIP_CONFIG)
    register_sam_architecture(TINY_SAM_NAME, TINY_SAM)


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny CLIP saved as an open_clip checkpoint file."""
    folder = tmp_path_factory.mktemp("clip")
    register_clip_config(folder / "configs", TINY_CLIP_NAME, TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    path = folder / "tiny_clip.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def clip_scale_100_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-init tiny CLIP with its logit scale at 100, as trained CLIP models have it (training
    clamps it there; random init gives 1/0.07 = 14.3, at which no softmax over 20 classes reaches VOC's
    0.85 background threshold, so every pixel would be background)."""
    folder = tmp_path_factory.mktemp("clip_scale_100")
    register_clip_config(folder / "configs", TINY_CLIP_NAME, TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    path = folder / "clip_scale_100.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def varied_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-init tiny CLIP with its positional embedding scaled up 20x, saved as an open_clip
    checkpoint. With plain random weights every patch feature points the same way and one prompt wins
    every mask; with strong positions, as a trained CLIP's features do, different regions favour
    different prompts, so naming tests see a mix of classes."""
    folder = tmp_path_factory.mktemp("varied_clip")
    register_clip_config(folder / "configs", TINY_CLIP_NAME, TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    with torch.no_grad():
        model.visual.positional_embedding.mul_(20.0)
    path = folder / "varied_clip.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init SAM with a tiny image encoder saved as a SAM checkpoint file."""
    register_sam_architecture(TINY_SAM_NAME, TINY_SAM)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


def scale_mask_logits(mask_decoder: torch.nn.Module, factor: float = 40.0) -> None:
    """Scale a random-init decoder's mask logits up so that masks differ between points (as a trained
    SAM's do); with plain random weights every logit is near 0."""
    with torch.no_grad():
        for mlp in mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)


def tiny_sam():
    """Random-init tiny SAM with scaled mask logits (``scale_mask_logits``)."""
    torch.manual_seed(0)
    sam = build_sam_model(TINY_SAM)
    scale_mask_logits(sam.mask_decoder)
    return sam


def scaled_sam2(model_type: str = "sam2.1_hiera_t"):
    """Random-init SAM 2 model of the real config with scaled mask logits (``scale_mask_logits``)."""
    torch.manual_seed(0)
    model = build_sam2_model(model_type)
    scale_mask_logits(model.sam_mask_decoder)
    return model


@pytest.fixture(scope="session")
def sam2_t_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scaled_sam2("sam2.1_hiera_t")`` saved in the official layout ``{"model": state_dict}``."""
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_t_random.pt"
    torch.save({"model": scaled_sam2().state_dict()}, path)
    return path


PARITY_REPORTS: list[tuple[str, ParityReport]] = []  # each parity check of the run, listed at its end


def assert_reference_parity(
    ours: list[dict], reference_generator, image: np.ndarray, *, allow_empty: bool = False
) -> ParityReport:
    """Our records (or COCO annotations) for ``image`` against ``reference_generator``'s
    (``SamAutomaticMaskGenerator`` or ``SAM2AutomaticMaskGenerator``) by the parity criterion of
    ``gem_sam.sam.parity``; what it explained is listed at the end of the test run. An empty reference
    is refused unless ``allow_empty``."""
    reference, trace = traced_reference_masks(reference_generator, image)
    report = check_parity(ours, reference, trace, allow_empty=allow_empty)
    PARITY_REPORTS.append((os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0], report))
    assert report.holds(), report
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    """Per parity test, the criterion's reports added up (a test may compare several images)."""
    if not PARITY_REPORTS:
        return
    terminalreporter.section("mask generator parity: what the criterion explained")
    tests: dict[str, list[ParityReport]] = {}
    for test, report in PARITY_REPORTS:
        tests.setdefault(test, []).append(report)
    for test, reports in tests.items():
        total = ParityReport(
            matched=sum(r.matched for r in reports),
            ours_only=sum(r.ours_only for r in reports),
            reference_only=sum(r.reference_only for r in reports),
            differing_pixels=sum(r.differing_pixels for r in reports),
            carried_pixels=sum(r.carried_pixels for r in reports),
            max_iou_difference=max(r.max_iou_difference for r in reports),
            unexplained=tuple(line for r in reports for line in r.unexplained),
        )
        terminalreporter.write_line(f"{test} ({len(reports)} image(s)): {total}")


# Generator settings loose enough that many random-init masks survive (NMS at 1.0 keeps all boxes).
LOOSE_SETTINGS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.3, "box_nms_thresh": 1.0}


def small_photo(name: str, *, long_side: int = 160) -> Image.Image:
    """A scikit-image photo scaled so that its long side is ``long_side`` pixels (mode kept)."""
    image = Image.open(SKIMAGE_DATA / name)
    image.load()
    scale = long_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Real photos: colour, grey (camera), RGBA (logo), in a nested folder, as small files."""
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    small_photo("astronaut.png").save(folder / "astronaut.png")
    small_photo("chelsea.png").convert("RGB").save(folder / "nested" / "chelsea.jpg")
    small_photo("camera.png").save(folder / "camera.png")
    small_photo("logo.png").save(folder / "logo.png")
    return folder


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("# animals\ncat\n\nperson\nrocket\n", encoding="utf-8")
    return path


def rgb_photo(name: str = "astronaut.png", *, long_side: int = 160) -> np.ndarray:
    return np.asarray(small_photo(name, long_side=long_side).convert("RGB"))


def self_evaluation(coco_path: Path):
    """pycocotools' segm COCOeval of a COCO file's annotations (with scores) against the file itself;
    returns the evaluator after ``summarize`` (``stats[0]`` is AP)."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(coco_path))
        detections = ground_truth.loadRes(json.loads(Path(coco_path).read_text())["annotations"])
        evaluator = COCOeval(ground_truth, detections, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def copy_photo(name: str, target: Path) -> Path:
    shutil.copy(SKIMAGE_DATA / name, target)
    return target
