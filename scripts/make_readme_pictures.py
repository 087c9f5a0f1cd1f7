"""The README's pictures of a semantic export and of a run report.

Labels six scikit-image photos with graph-based region masks (the tests' ``RegionMaskGenerator``:
object-like masks, unlike a random-init SAM's) named by a random-init CLIP ViT-B/16, exports the
run as semantic label maps, and saves:

    docs/semantic_example.png   a photo beside its label map (palette colours, legend)
    docs/report_example.png     the run's report picture

It also runs the two polygon exports and prints their summaries (with the worst area disagreement of a
rasterised polygon with its mask). The class names come from random weights, so they say nothing about
GEM's quality; the pictures show the formats.

    python scripts/make_readme_pictures.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gem_sam import AutoLabeller, GemScorer, label_folder  # noqa: E402
from gem_sam.cli.export import main as export  # noqa: E402
from gem_sam.export.semantic import palette  # noqa: E402
from gem_sam.naming.scorer import ScorerConfig  # noqa: E402
from tests.conftest import SKIMAGE_DATA  # noqa: E402
from tests.region_masks import RegionMaskGenerator  # noqa: E402

PHOTOS = ["coffee.png", "astronaut.png", "chelsea.png", "coins.png", "rocket.jpg", "motorcycle_left.png"]
VOCABULARY = ["cup", "person", "cat", "coin", "rocket", "motorcycle", "table", "sky"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = folder / "images"
        images.mkdir()
        for name in PHOTOS:
            photo = Image.open(SKIMAGE_DATA / name).convert("RGB")
            photo.thumbnail((320, 320))
            photo.save(images / f"{Path(name).stem}.png")
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
        scorer = GemScorer(model, tokenizer=open_clip.get_tokenizer("ViT-B-16"), config=ScorerConfig()).eval()
        labeller = AutoLabeller(scorer=scorer, mask_generator=RegionMaskGenerator(), vocabulary=VOCABULARY)
        out = folder / "annotations.json"
        label_folder(labeller, images_dir=images, out_path=out, settings={}, progress=False)
        assert export([str(out), "--to", "semantic", "--out", str(folder / "semantic")]) == 0
        # the polygon exports print the worst area disagreement of a rasterised polygon with its mask
        for export_format in ("coco-polygons", "yolo-seg"):
            print(f"--to {export_format}:")
            assert export([str(out), "--to", export_format, "--out", str(folder / export_format)]) == 0

        photo = Image.open(images / "coffee.png").convert("RGB")
        label_map = Image.open(folder / "semantic" / "labels" / "coffee.png")
        present = sorted(set(np.unique(np.asarray(label_map)).tolist()) - {0})
        colours = palette()
        legend_height = 22 * (len(present) + 1)
        canvas = Image.new("RGB", (photo.width * 2 + 10, max(photo.height, legend_height)), "white")
        canvas.paste(photo, (0, 0))
        canvas.paste(label_map.convert("RGB"), (photo.width + 10, 0))
        draw = ImageDraw.Draw(canvas)
        for row, class_id in enumerate([0, *present]):
            colour = tuple(colours[3 * class_id : 3 * class_id + 3])
            name = "unlabelled" if class_id == 0 else VOCABULARY[class_id - 1]
            y = 6 + 22 * row
            draw.rectangle([photo.width + 16, y, photo.width + 30, y + 14], fill=colour, outline="white")
            draw.text((photo.width + 36, y + 1), f"{class_id} {name}", fill="white")
        docs = REPO / "docs"
        canvas.save(docs / "semantic_example.png")
        shutil.copy(f"{out}.report.png", docs / "report_example.png")
        print(f"wrote {docs / 'semantic_example.png'} and {docs / 'report_example.png'}")


if __name__ == "__main__":
    main()
