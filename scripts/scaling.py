"""Memory and throughput of folder runs, with small random-init models of the real architectures.

    python scripts/scaling.py memory --counts 100 2000     # peak RSS after 100 and 2000 images
    python scripts/scaling.py ray --images 48 --workers 1 2  # Ray throughput, 1 vs 2 workers

Each measured run is a fresh process labelling a folder of small photos (scikit-image photos resized to
64x48), so its peak resident memory is its own. The models are a 6-block ViT/16 CLIP and a 2-block SAM
image encoder with SAM's real prompt encoder and decoder: enough to exercise every stage, small enough
to label thousands of images on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_CLIP_NAME = "scaling-vit-tiny16"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 48, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_SAM_NAME = "scaling_vit_tiny"
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg", "motorcycle_left.png")


def prepare(folder: Path, count: int) -> dict:
    """Random-init checkpoints and ``count`` small photos under ``folder``; returns the spec fields."""
    import open_clip
    import skimage
    import torch
    from PIL import Image

    from gem_sam.sam.sam1_model import SamArchitecture, build_sam_model

    configs = folder / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(configs)
    architecture = SamArchitecture(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))
    torch.manual_seed(0)
    clip_path, sam_path = folder / "clip.pt", folder / "sam.pth"
    torch.save(open_clip.create_model(TINY_CLIP_NAME).state_dict(), clip_path)
    torch.save(build_sam_model(architecture).state_dict(), sam_path)
    images = folder / "images"
    images.mkdir(exist_ok=True)
    data = Path(skimage.__file__).parent / "data"
    sources = [Image.open(data / name).convert("RGB").resize((64, 48)) for name in PHOTOS]
    for index in range(count):
        sources[index % len(sources)].rotate(index % 360).save(images / f"img_{index:05d}.jpg", quality=90)
    return {
        "clip_config": str(configs),
        "clip": str(clip_path),
        "sam": str(sam_path),
        "architecture": [32, 2, 2, [1]],
        "images": str(images),
    }


def child(config: dict, out: Path, engine: str, workers: int) -> None:
    """One measured run (in its own process): label the folder, print peak RSS and time as JSON."""
    from gem_sam.labelling.pipeline import label_folder
    from gem_sam.labelling.spec import LabellerSpec
    from gem_sam.sam import MaskGeneratorConfig
    from gem_sam.sam.sam1_model import SamArchitecture

    embed, depth, heads, globals_ = config["architecture"]
    spec = LabellerSpec(
        vocabulary=("cat", "person", "rocket", "coffee cup", "motorcycle"),
        clip_model=TINY_CLIP_NAME,
        pretrained=config["clip"],
        sam_model=TINY_SAM_NAME,
        sam_checkpoint=config["sam"],
        generator=MaskGeneratorConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0),
        device="cpu",
        clip_config_paths=(config["clip_config"],),
        sam_architectures={TINY_SAM_NAME: SamArchitecture(embed, depth, heads, tuple(globals_))},
    )
    start = time.perf_counter()
    if engine == "ray":
        from gem_sam.labelling.ray_engine import label_folder_ray

        summary = label_folder_ray(spec, images_dir=config["images"], out_path=out, workers=workers, progress=False)
    else:
        labeller = spec.build()
        summary = label_folder(
            labeller, images_dir=config["images"], out_path=out, settings=spec.settings(), progress=False
        )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": summary.labelled,
                "masks": summary.masks,
                "seconds": seconds,
                "images_per_second": summary.labelled / seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(config: dict, out: Path, engine: str = "single", workers: int = 1) -> dict:
    command = [sys.executable, __file__, "child", json.dumps(config), str(out), engine, str(workers)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    memory = modes.add_parser("memory", help="peak RSS of runs over growing folders")
    memory.add_argument("--counts", type=int, nargs="+", default=[100, 2000])
    ray = modes.add_parser("ray", help="throughput with 1, 2, ... Ray workers")
    ray.add_argument("--images", type=int, default=48)
    ray.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if args.mode == "memory":
            for count in args.counts:
                config = prepare(folder / f"n{count}", count)
                result = run_child(config, folder / f"n{count}" / "out.json")
                print(
                    f"{result['images']} images: peak RSS {result['peak_rss_mb']:.0f} MB, "
                    f"{result['images_per_second']:.2f} images/s, {result['masks']} masks"
                )
        else:
            config = prepare(folder, args.images)
            single = run_child(config, folder / "single.json")
            print(f"single process: {single['images_per_second']:.2f} images/s")
            for workers in args.workers:
                result = run_child(config, folder / f"ray{workers}.json", engine="ray", workers=workers)
                print(
                    f"Ray, {workers} worker(s): {result['images_per_second']:.2f} images/s "
                    f"({result['images']} images in {result['seconds']:.1f} s, start-up included)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
