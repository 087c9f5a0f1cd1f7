"""Real-size architectures (ViT-B/16 CLIP, SAM ViT-B) with random weights, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from gem_sam.label import main
from gem_sam.sam.sam1_model import SAM_ARCHITECTURES, build_sam_model

from ..conftest import small_photo

pytestmark = pytest.mark.slow


def test_vit_b16_and_sam_vit_b_label_a_photo(tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip_path = tmp_path / "vit_b16.pt"
    torch.save(open_clip.create_model("ViT-B-16", pretrained=None).state_dict(), clip_path)
    sam_path = tmp_path / "sam_vit_b.pth"
    torch.save(build_sam_model(SAM_ARCHITECTURES["vit_b"]).state_dict(), sam_path)
    images = tmp_path / "images"
    images.mkdir()
    small_photo("coffee.png", long_side=640).save(images / "coffee.png")  # 600x400 photo -> 640x427
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("coffee cup\ntable\nspoon\n")
    out = tmp_path / "out.json"
    code = main([
        "--images", str(images), "--vocab", str(vocab), "--out", str(out), "--quiet", "--device", "cpu",
        "--clip-model", "ViT-B-16", "--pretrained", str(clip_path),
        "--sam-model", "vit_b", "--sam-checkpoint", str(sam_path),
        "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
        "--stability-score-offset", "0.01", "--box-nms-thresh", "1.0",
    ])  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["images"] == [{"id": 1, "file_name": "coffee.png", "width": 640, "height": 427}]
    assert data["annotations"], "random SAM ViT-B with open thresholds gives masks"
    assert all(a["segmentation"]["size"] == [427, 640] for a in data["annotations"])
