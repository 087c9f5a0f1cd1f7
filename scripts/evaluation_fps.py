"""Images per second of ``gem_sam.evaluate`` for every method, on this machine.

    python scripts/evaluation_fps.py --images 4

Writes a small dataset in the OpenImages V7 layout (scikit-image photos resized to 640x480, a few
points per image) and random-init checkpoints of CLIP ViT-B/16 and SAM ViT-B, then runs the evaluation
command once per method and prints its fps (whole loop) and fps of the models alone. The p-mIoU of
random weights means nothing; only the speed is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

METHODS = ("clip", "maskclip", "clipsurgery", "gem", "gem-sam")
PHOTOS = ("coffee.png", "astronaut.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg")


def write_dataset(folder: Path, count: int) -> tuple[Path, Path, Path]:
    import skimage
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True)
    data = Path(skimage.__file__).parent / "data"
    rows = ["ImageId,X,Y,Label,EstimatedYesNo"]
    for index in range(count):
        image_id = f"img{index:04d}"
        photo = Image.open(data / PHOTOS[index % len(PHOTOS)]).convert("RGB").resize((640, 480))
        photo.save(images / f"{image_id}.jpg", quality=90)
        for j, (x, y) in enumerate([(0.2, 0.3), (0.7, 0.6), (0.5, 0.9), (0.9, 0.1)]):
            rows.append(f"{image_id},{x},{y},/m/{j % 2},{'yes' if j < 3 else 'no'}")
    points, classes = folder / "points.csv", folder / "classes.csv"
    points.write_text("\n".join(rows) + "\n")
    classes.write_text("LabelName,DisplayName\n/m/0,cup\n/m/1,person\n")
    return points, classes, images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()

    import open_clip
    import torch

    from gem_sam.evaluate import main as evaluate
    from gem_sam.sam.sam1_model import SAM_ARCHITECTURES, build_sam_model

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        points, classes, images = write_dataset(folder, args.images)
        torch.manual_seed(0)
        clip_path, sam_path = folder / "clip.pt", folder / "sam.pth"
        torch.save(open_clip.create_model("ViT-B-16").state_dict(), clip_path)
        torch.save(build_sam_model(SAM_ARCHITECTURES["vit_b"]).state_dict(), sam_path)
        for method in args.methods:
            out = folder / f"{method}.json"
            evaluate([
                "--points", str(points), "--classes", str(classes), "--images", str(images), "--method", method,
                "--out", str(out), "--quiet", "--device", "cpu", "--pretrained", str(clip_path),
                "--sam-model", "vit_b", "--sam-checkpoint", str(sam_path),
            ])  # fmt: skip
            report = json.loads(out.read_text())
            print(f"{method}: {report['fps']:.3f} fps, models alone {report['fps_model']:.3f} fps ({report['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
