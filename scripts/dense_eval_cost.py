"""Where one image's dense evaluation time goes: the model against the metric bookkeeping.

Writes a small ADE20K-layout set (scikit-image photos at their own size, about 512 px, with label
maps of random rectangles over the 150 classes), saves a random-init CLIP ViT-B/16 checkpoint, and
runs ``gem_sam.evaluate_dense`` on it in this process. Prints the per-image seconds of the model
(windows, upsampling, classes) and of the metric (confusion matrix and its sparse record), and
their ratio.

    python scripts/dense_eval_cost.py --images 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gem_sam.evaluate_dense import main as evaluate_dense  # noqa: E402

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]


def write_ade_layout(root: Path, count: int) -> None:
    images, labels = root / "images" / "validation", root / "annotations" / "validation"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        photo = Image.open(SKIMAGE_DATA / PHOTOS[index % len(PHOTOS)]).convert("RGB")
        label = np.zeros((photo.height, photo.width), dtype=np.uint8)
        for _ in range(12):
            top, left = rng.integers(0, photo.height - 20), rng.integers(0, photo.width - 20)
            label[top : top + rng.integers(20, 200), left : left + rng.integers(20, 200)] = rng.integers(1, 151)
        photo.save(images / f"ADE_val_{index:08d}.jpg", quality=95)
        Image.fromarray(label).save(labels / f"ADE_val_{index:08d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--method", default="gem")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_ade_layout(folder / "ADEChallengeData2016", args.images)
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-16", pretrained=None).state_dict(), folder / "clip.pt")
        out = folder / "report.json"
        code = evaluate_dense(
            ["--dataset", "ade20k", "--root", str(folder / "ADEChallengeData2016"), "--method", args.method,
             "--pretrained", str(folder / "clip.pt"), "--device", "cpu", "--out", str(out), "--quiet"]
        )  # fmt: skip
        if code:
            raise SystemExit(code)
        report = json.loads(out.read_text())
    seconds = report["seconds_per_image"]
    print(f"images: {report['n_images']} (ADE20K layout, 150 classes, about 512 px)")
    print(f"model: {seconds['model']:.3f} s per image, metric: {seconds['metric'] * 1000:.1f} ms per image")
    print(f"metric / model: {seconds['metric'] / seconds['model']:.4f}; whole loop {1 / report['fps']:.3f} s per image")


if __name__ == "__main__":
    main()
