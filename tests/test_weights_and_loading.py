"""Checkpoint files: SAM and CLIP loading through the user-facing builders, downloads, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from gem_sam.naming.scorer import build_gem_scorer
from gem_sam.sam import SAM2_VARIANTS
from gem_sam.sam.sam1_model import SAM_ARCHITECTURES, load_sam
from gem_sam.weights import SAM_CHECKPOINTS, CheckpointFile, download_checkpoint, load_state_dict

from .conftest import TINY_CLIP_NAME, TINY_SAM_NAME


def test_sam_loads_from_checkpoint_file(tiny_sam_checkpoint: Path) -> None:
    sam = load_sam(model_type=TINY_SAM_NAME, checkpoint=tiny_sam_checkpoint, device="cpu")
    saved = torch.load(tiny_sam_checkpoint, weights_only=True)
    torch.testing.assert_close(sam.mask_decoder.iou_token.weight, saved["mask_decoder.iou_token.weight"])
    assert not sam.training


def test_missing_sam_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth.*does not exist.*checkpoints/README.md"):
        load_sam(model_type="vit_b", checkpoint=tmp_path / "nope.pth")


def test_wrong_sam_architecture_names_the_right_one(tmp_path: Path) -> None:
    """A ViT-B-shaped encoder loaded as vit_l: the error says it is vit_b."""
    fake = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    fake.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    path = tmp_path / "sam_b.pth"
    torch.save(fake, path)
    with pytest.raises(ValueError, match="width 768 and 12 blocks.*pass --sam-model vit_b"):
        load_sam(model_type="vit_l", checkpoint=path)


def test_tiny_checkpoint_as_vit_b_is_refused(tiny_sam_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="width 32 and 2 blocks, but vit_b needs width 768"):
        load_sam(model_type="vit_b", checkpoint=tiny_sam_checkpoint)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
def test_unreadable_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_state_dict(path)


def test_unknown_sam_model() -> None:
    with pytest.raises(ValueError, match="unknown SAM model 'vit_x'.*vit_b"):
        load_sam(model_type="vit_x")


def test_registry_lists_every_official_checkpoint() -> None:
    sam1 = {"vit_b", "vit_l", "vit_h"}
    assert set(SAM_CHECKPOINTS) == sam1 | set(SAM2_VARIANTS) and sam1 <= set(SAM_ARCHITECTURES)
    assert len(SAM2_VARIANTS) == 8
    readme = (Path(__file__).parents[1] / "checkpoints" / "README.md").read_text()
    for name, entry in SAM_CHECKPOINTS.items():
        assert entry.url.endswith(entry.file_name) and entry.url in readme
        assert f"`{name}` | `{entry.file_name}` | {entry.url}" in readme
        if name in sam1:  # SAM 2's checksums are not published (checkpoints/README.md says so)
            assert len(entry.sha256) == 64 and entry.sha256 in readme
        else:
            assert entry.sha256 is None


def test_download_without_a_published_hash_prints_it(tmp_path: Path, capsys) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"weights" * 1000)
    entry = CheckpointFile(url=source.as_uri(), file_name="sam2_like.pt", sha256=None)
    path = download_checkpoint(entry, target_dir=tmp_path / "cache", progress=False)
    assert path.read_bytes() == source.read_bytes()
    assert hashlib.sha256(source.read_bytes()).hexdigest() in capsys.readouterr().err


def test_download_checks_the_hash(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"weights" * 1000)
    good = CheckpointFile(
        url=source.as_uri(), file_name="model.pth", sha256=hashlib.sha256(source.read_bytes()).hexdigest()
    )
    path = download_checkpoint(good, target_dir=tmp_path / "cache", progress=False)
    assert path.read_bytes() == source.read_bytes()
    bad = CheckpointFile(url=source.as_uri(), file_name="other.pth", sha256="0" * 64)
    with pytest.raises(RuntimeError, match="SHA-256"):
        download_checkpoint(bad, target_dir=tmp_path / "cache", progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model.pth"]  # nothing half-written


def test_offline_download_names_the_file(tmp_path: Path) -> None:
    entry = CheckpointFile(
        url="http://127.0.0.1:9/sam_vit_b_01ec64.pth", file_name="sam_vit_b_01ec64.pth", sha256="0" * 64
    )
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth.*could not be downloaded.*checkpoints/README.md"):
        download_checkpoint(entry, target_dir=tmp_path, progress=False)


def test_clip_loads_from_checkpoint_file(tiny_clip_checkpoint: Path) -> None:
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint), device="cpu")
    saved = torch.load(tiny_clip_checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(scorer.clip_model.visual.proj, saved["visual.proj"])


def test_clip_errors(tmp_path: Path, tiny_clip_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-Q-16'"):
        build_gem_scorer(model_name="ViT-Q-16", pretrained=None, device="cpu")
    with pytest.raises(FileNotFoundError, match="'weights.pt' is neither a pretrained tag of ViT-B-16.*openai"):
        build_gem_scorer(model_name="ViT-B-16", pretrained="weights.pt", device="cpu")
    with pytest.raises(ValueError, match="does not fit the architecture ViT-B-32"):
        build_gem_scorer(model_name="ViT-B-32", pretrained=str(tiny_clip_checkpoint), device="cpu")
    with pytest.raises(ValueError, match="device 'tpu'"):
        build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=None, device="tpu")
