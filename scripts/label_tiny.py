"""Label three scikit-image photos with the tests' tiny random-init models through ``gem_sam.label``, to
compare the output of two checkouts byte for byte (the models and photos are made the same way in both).

    python scripts/label_tiny.py /tmp/a/annotations.json             # in one checkout
    python scripts/label_tiny.py /tmp/b/annotations.json             # in the other
    cmp /tmp/a/annotations.json /tmp/b/annotations.json

The inputs are written to the same folder each time (``<temp>/gem_sam_label_tiny``), so that the file's
``info.images_dir`` is the same too. The vocabulary is one class per line (cat, person, rocket, cup);
extra arguments go to gem_sam.label.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import open_clip
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gem_sam.label import main as label  # noqa: E402
from tests.conftest import TINY_CLIP_NAME, TINY_SAM_NAME, register_tiny_models, small_photo, tiny_sam  # noqa: E402


def main(out: str, extra: list[str]) -> int:
    folder = Path(tempfile.gettempdir()) / "gem_sam_label_tiny"
    shutil.rmtree(folder, ignore_errors=True)
    images = folder / "images"
    images.mkdir(parents=True)
    register_tiny_models(folder / "configs")
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    torch.save({"state_dict": clip.state_dict()}, folder / "clip.pt")
    torch.save(tiny_sam().state_dict(), folder / "sam.pth")
    for name in ("astronaut.png", "coffee.png", "camera.png"):
        small_photo(name).save(images / name)
    vocab = folder / "vocab.txt"
    vocab.write_text("cat\nperson\nrocket\ncup\n")
    return label(
        ["--images", str(images), "--vocab", str(vocab), "--out", out, "--clip-model", TINY_CLIP_NAME,
         "--pretrained", str(folder / "clip.pt"), "--sam-model", TINY_SAM_NAME, "--sam-checkpoint",
         str(folder / "sam.pth"), "--device", "cpu", "--points-per-side", "4", "--pred-iou-thresh", "0",
         "--stability-score-thresh", "0.3", "--box-nms-thresh", "1.0", "--quiet", *extra]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
