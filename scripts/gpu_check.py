"""The GPU path in one table: parity on the device in fp32, images per second of the labelling at fp32,
bf16 and bf16 with a compiled encoder against the reference generators, and peak device memory.

    bash scripts/gpu_check.sh                       # on a GPU: SAM ViT-B and SAM 2.1 Hiera-T, 2 images
    bash scripts/gpu_check.sh --device cpu          # the CPU fallback CI runs: 1 small image, few points

Random-init checkpoints of the real architectures are written (no trained weights here), with SAM's IoU
head shifted as in ``scripts/benchmark.py``'s trained-like scenario (90% of the grid prompts passing the
IoU filter) and the mask logits scaled as in the tests, so that masks survive a loosened stability
threshold; parity is checked with ``gem_sam.sam.parity`` against segment-anything's and sam2's own
generators on the same device (the table's parity column). The same photos go through every row; a
row's images per second leaves out a warm-up image. bf16 is not float32 rounding: its rows give the mean
IoU of each fp32 mask with its best match among the bf16 masks of the same image. On the CPU, peak
memory is the process's resident peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

STABILITY = 0.3  # loosened so that random-init masks survive


def photos(count: int, size_wh: tuple[int, int]) -> list[np.ndarray]:
    import skimage
    from PIL import Image

    names = ("coffee.png", "astronaut.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg")
    folder = Path(skimage.__file__).parent / "data"
    return [
        np.asarray(Image.open(folder / names[i % len(names)]).convert("RGB").resize(size_wh, Image.BICUBIC))
        for i in range(count)
    ]


def prepared_checkpoint(sam_model: str, folder: Path, device: str) -> str:
    """A random-init checkpoint of ``sam_model``, trained-like at the IoU filter, mask logits scaled."""
    import torch
    from benchmark import shift_iou_head, write_random_checkpoints

    from gem_sam.weights import load_state_dict

    sam_path, _ = write_random_checkpoints(folder, sam_model=sam_model, clip_model="ViT-B-16")
    shifted, _ = shift_iou_head(
        {"sam_model": sam_model, "sam_checkpoint": sam_path, "device": device, "images": 1}, pass_share=0.9,
        folder=folder,
    )  # fmt: skip
    state = load_state_dict(shifted)
    for key in [k for k in state if "output_hypernetworks_mlps." in k and k.endswith("layers.2.weight")]:
        state[key] = state[key] * 40.0
    path = folder / f"{sam_model}_prepared.pt"
    torch.save({"model": state} if sam_model.startswith("sam2") else state, path)
    return str(path)


def reset_peak(device) -> None:  # noqa: ANN001 - a torch device
    import torch
    from benchmark import reset_peak_rss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def peak_mb(device) -> float:  # noqa: ANN001
    import torch
    from benchmark import peak_rss_mb

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()


def timed(generate, images: list[np.ndarray], device) -> tuple[float, list]:  # noqa: ANN001
    """Images per second of ``generate`` over ``images`` (the first is a warm-up), and its outputs."""
    import torch

    outputs = [generate(images[0])]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for image in images[1:]:
        outputs.append(generate(image))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return (len(images) - 1) / seconds if seconds > 0 else float("nan"), outputs


def mask_iou_against(outputs: list[list[dict]], baseline: list[list[dict]]) -> float:
    """Mean over the baseline's masks (all images) of the best IoU with a mask of ``outputs`` for the
    same image; 1.0 when both are the same masks. NaN when the baseline has no masks."""
    from pycocotools import mask as mask_utils

    best = []
    for ours, expected in zip(outputs, baseline, strict=True):
        if not expected:
            continue
        if not ours:
            best += [0.0] * len(expected)
            continue
        ious = mask_utils.iou(
            [a["segmentation"] for a in expected], [a["segmentation"] for a in ours], [0] * len(ours)
        )  # [baseline masks, our masks]
        best += np.asarray(ious).max(axis=1).tolist()
    return float(np.mean(best)) if best else float("nan")


VOCABULARY = ["person", "cat", "cup", "rocket", "motorcycle", "sky", "grass", "table"]
COLUMNS = ["model", "run", "images/s", "peak memory (MB)", "masks/image", "mask IoU against fp32", "parity"]


@contextlib.contextmanager
def without_tf32() -> Iterator[None]:
    """float32 products in float32. PyTorch's default lets cuDNN run float32 convolutions in TF32 (10-bit
    mantissas) on Ampere and newer GPUs: the reference's mask upscaling is such a convolution, ours a matrix
    product, so under that default the two differ by TF32 rounding, not float32 rounding."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def reference_row(
    sam_model: str,
    checkpoint: str,
    images: list[np.ndarray],
    device,  # noqa: ANN001 - a torch device
    points: int,
    parity_images: int,
) -> dict:
    """Parity of our fp32 generator with the reference generator on the device (TF32 off: float32 throughout),
    on the first ``parity_images`` photos, and the reference's speed under PyTorch's defaults."""
    from gem_sam import build_mask_generator
    from gem_sam.sam import is_sam2_model
    from gem_sam.sam.parity import check_parity, traced_reference_masks

    ours32 = build_mask_generator(
        model_type=sam_model, checkpoint=checkpoint, device=str(device), points_per_side=points,
        stability_score_thresh=STABILITY,
    )  # fmt: skip
    if is_sam2_model(sam_model):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Reference
    else:
        from segment_anything import SamAutomaticMaskGenerator as Reference
    reference = Reference(ours32.model, output_mode="coco_rle", **ours32.config.reference_kwargs())
    reports = []
    with without_tf32():
        for image in images[:parity_images]:
            expected, trace = traced_reference_masks(reference, image)
            reports.append(check_parity(ours32.generate(image), expected, trace, allow_empty=True))
    for report in reports:
        print(f"  {sam_model} parity: {report}", flush=True)
    parity = (
        f"{'holds' if all(r.holds() for r in reports) else 'FAILS'}: {sum(r.matched for r in reports)} masks matched, "
        f"{sum(r.differing_pixels for r in reports)} pixels and {sum(r.ours_only + r.reference_only for r in reports)} "
        "masks explained"
    )
    reset_peak(device)
    speed, outputs = timed(reference.generate, images, device)
    return {"model": sam_model, "run": "reference generator, fp32", "images_per_s": speed, "peak_mb": peak_mb(device),
            "masks_per_image": float(np.mean([len(o) for o in outputs])), "parity": parity}  # fmt: skip


def labelling_row(
    sam_model: str, checkpoint: str, images: list[np.ndarray], device, points: int, *,  # noqa: ANN001
    scorer, precision: str, compiled: bool, fp32_outputs: list[list[dict]] | None,  # noqa: ANN001
) -> tuple[dict, list[list[dict]]]:  # fmt: skip
    """Images per second of the whole labelling (masks and their names) at one precision, and its outputs;
    bf16 rows carry the mean IoU of the fp32 masks with their best bf16 match."""
    from gem_sam import AutoLabeller, build_mask_generator

    generator = build_mask_generator(
        model_type=sam_model, checkpoint=checkpoint, device=str(device), precision=precision, compile=compiled,
        points_per_side=points, stability_score_thresh=STABILITY,
    )  # fmt: skip
    labeller = AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=VOCABULARY)
    generator.times.enabled = True
    reset_peak(device)
    speed, outputs = timed(labeller.label, images, device)
    per_image = {stage: seconds / len(images) for stage, seconds in generator.times.seconds.items()}
    print(f"  {sam_model} {precision}{' compiled' if compiled else ''}, seconds per image by stage (warm-up in): "
          + ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in per_image.items()), flush=True)  # fmt: skip
    row = {
        "model": sam_model,
        "run": f"gem-sam label, {precision}" + (", --compile" if compiled else ""),
        "images_per_s": speed,
        "peak_mb": peak_mb(device),
        "masks_per_image": float(np.mean([len(o) for o in outputs])),
        "iou_against_fp32": 1.0 if fp32_outputs is None else mask_iou_against(outputs, fp32_outputs),
        "parity": "",
    }
    return row, outputs


def table_line(row: dict) -> str:
    masks = f"{row['masks_per_image']:.0f}" if "masks_per_image" in row else "-"
    iou = f"{row['iou_against_fp32']:.4f}" if "iou_against_fp32" in row else "-"
    return (f"| {row['model']} | {row['run']} | {row['images_per_s']:.3f} | {row['peak_mb']:.0f} | {masks} | {iou} | "
            f"{row['parity'] or '-'} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the fallback CI runs)")
    parser.add_argument("--images", type=int, default=None, help="timed images (default: 2 on a GPU, 1 on the CPU)")
    parser.add_argument("--models", nargs="+", default=["vit_b", "sam2.1_hiera_t"])
    parser.add_argument("--points-per-side", type=int, default=None, help="default: 32 on a GPU, 4 on the CPU")
    parser.add_argument(
        "--parity-images", type=int, default=None, help="photos checked for parity (default: 1 on a GPU, 2 on the CPU)"
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the rows with a compiled encoder")
    parser.add_argument("--json", default=None, help="also write the rows here, rewritten as each row finishes")
    args = parser.parse_args(argv)

    import torch

    from gem_sam import build_gem_scorer
    from gem_sam.devices import resolve_device

    torch.set_grad_enabled(False)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    # On a GPU the reference's run-length encoding of random-init noise masks takes 20-30 s a photo.
    count = args.images if args.images is not None else (2 if on_gpu else 1)
    parity_images = args.parity_images if args.parity_images is not None else (1 if on_gpu else 2)
    points = args.points_per_side or (32 if on_gpu else 4)
    images = photos(count + 1, (640, 480) if on_gpu else (320, 240))
    folder = Path(tempfile.mkdtemp())
    name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    print(f"\n{name}, torch {torch.__version__}, {count} timed image(s) of {images[0].shape[1]}x{images[0].shape[0]}, "
          f"{points}x{points} points")  # fmt: skip
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    scorer = build_gem_scorer(model_name="ViT-B-16", pretrained=None, device=str(device))
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        print(table_line(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))

    checkpoints, fp32_outputs = {}, {}
    # The compiled rows come last: compiling takes the longest, and the other rows are whole without them.
    for sam_model in args.models:
        checkpoints[sam_model] = prepared_checkpoint(sam_model, folder, str(device))
        add(reference_row(sam_model, checkpoints[sam_model], images, device, points, parity_images))
        for precision in ("fp32", "bf16"):
            row, outputs = labelling_row(
                sam_model, checkpoints[sam_model], images, device, points, scorer=scorer, precision=precision,
                compiled=False, fp32_outputs=fp32_outputs.get(sam_model),
            )  # fmt: skip
            fp32_outputs.setdefault(sam_model, outputs)
            add(row)
    for sam_model in [] if args.no_compile else args.models:
        row, _ = labelling_row(
            sam_model, checkpoints[sam_model], images, device, points, scorer=scorer, precision="bf16", compiled=True,
            fp32_outputs=fp32_outputs[sam_model],
        )  # fmt: skip
        add(row)
    return 0 if all("FAILS" not in row["parity"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
