"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import TINY_CLIP_NAME, TINY_SAM_NAME


@pytest.fixture
def base_args(tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path) -> list[str]:
    """The tiny test models and loose generator settings, so that masks survive, on the CPU, quietly."""
    return [
        "--clip-model", TINY_CLIP_NAME,
        "--pretrained", str(tiny_clip_checkpoint),
        "--sam-model", TINY_SAM_NAME,
        "--sam-checkpoint", str(tiny_sam_checkpoint),
        "--device", "cpu",
        "--points-per-side", "3",
        "--pred-iou-thresh", "0",
        "--stability-score-thresh", "0.3",
        "--box-nms-thresh", "1.0",
        "--quiet",
    ]  # fmt: skip
