"""Speed, memory and parity of gem_sam against the reference pipeline, in one run.

    python scripts/benchmark.py --images 2 --json benchmark.json

For each scenario of generator settings, the same photos (scikit-image photos resized to 640x480),
checkpoints and settings go through:

* the reference: ``segment_anything.SamAutomaticMaskGenerator`` for SAM 1 models, or
  ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`` for SAM 2 / 2.1 models (``--sam-model
  sam2.1_hiera_t``; coco_rle output), then labelling as a
  straightforward implementation does it: text embeddings computed for the image, the GEM similarity
  upsampled to [C, H, W], and its mean taken inside each full-resolution mask;
* ours: ``GridMaskGenerator`` and ``AutoLabeller`` (text embedded once per run, exact pooling at patch
  resolution).

Each side runs in its own process, so that its peak resident memory is its own. Times are per image,
after one warm-up image that is not counted. Without checkpoint files, random-init checkpoints of the
real architectures are written to a temporary folder (real weights change which masks pass the
filters, and so the times: the ``all-pass`` scenario, where every candidate passes the predicted-IoU
filter, bounds our time from above; ``many-masks`` keeps every candidate of an 8x8 grid, so that naming
192 masks per image is measured too).

``trained-like`` behaves like a trained SAM at the predicted-IoU filter: the IoU head's output bias is
shifted (in a checkpoint that both sides load) so that ``--pass-share`` of the grid prompts of these
photos have a mask above ``pred_iou_thresh``; every setting stays at its default. Our side also prints a
per-stage profile of the generator, and the encoder ratio: our whole labelling of an image over our
image encoder's time on it in the same run, a figure that carries from one machine to another.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCENARIOS = {
    # defaults, with the IoU head's bias shifted so that --pass-share of the grid prompts have a mask above
    # pred_iou_thresh, as with a trained SAM (random-init SAM passes none): the figure users get
    "trained-like": {},
    "default": {},  # the reference generator's defaults (random-init SAM: no prompt passes, our best case)
    "all-pass": {"pred_iou_thresh": 0.0},  # every candidate passes the IoU filter: our worst case
    # 8x8 points with every filter open: 192 masks per image to name, for the labelling cost
    "many-masks": {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0},
}
COCO_CLASSES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
)
PHOTOS = ("coffee.png", "astronaut.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg")


def reset_peak_rss() -> None:
    """Start this process's peak resident memory afresh (Linux). A spawned process begins as a fork of its
    parent, and without this its peak would include the parent's memory at the fork."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory since ``reset_peak_rss`` (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_photos(count: int) -> list[np.ndarray]:
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    names = [PHOTOS[i % len(PHOTOS)] for i in range(count + 1)]  # + 1 warm-up image
    return [np.asarray(Image.open(folder / name).convert("RGB").resize((640, 480), Image.BICUBIC)) for name in names]


def write_random_checkpoints(folder: Path, *, sam_model: str, clip_model: str) -> tuple[str, str]:
    import open_clip
    import torch

    from gem_sam.sam import SAM_ARCHITECTURES, build_sam2_model, build_sam_model, is_sam2_model

    torch.manual_seed(0)
    sam_path, clip_path = folder / f"sam_{sam_model}_random.pth", folder / f"{clip_model}_random.pt"
    if is_sam2_model(sam_model):
        torch.save({"model": build_sam2_model(sam_model).state_dict()}, sam_path)  # SAM 2's layout
    else:
        torch.save(build_sam_model(SAM_ARCHITECTURES[sam_model]).state_dict(), sam_path)
    torch.save(open_clip.create_model(clip_model, pretrained=None).state_dict(), clip_path)
    return str(sam_path), str(clip_path)


def iou_bias_key(sam_model: str) -> str:
    from gem_sam.sam import is_sam2_model

    return f"{'sam_' if is_sam2_model(sam_model) else ''}mask_decoder.iou_prediction_head.layers.2.bias"


def shift_iou_head(args: dict, *, pass_share: float, folder: Path) -> tuple[str, list[float]]:
    """A copy of the SAM checkpoint whose IoU head passes ``pass_share`` of the grid prompts of the
    benchmark photos at the default ``pred_iou_thresh``. Returns its path and each photo's share."""
    import torch

    from gem_sam import build_mask_generator
    from gem_sam.sam import generator_config, is_sam2_model
    from gem_sam.weights import load_state_dict

    threshold = generator_config(args["sam_model"]).pred_iou_thresh
    generator = build_mask_generator(
        model_type=args["sam_model"], checkpoint=args["sam_checkpoint"], device=args["device"], pred_iou_thresh=1.0
    )
    best_per_photo = []  # per photo, each prompt's best predicted IoU
    with torch.no_grad():
        for image in load_photos(args["images"]):
            features = generator.adapter.embed(image)
            points = generator.point_grids[0] * np.array(image.shape[:2])[None, ::-1]
            coords = generator.adapter.prompt_coords(points, image.shape[:2])
            iou_preds, _ = generator._decode(features, coords)  # nothing passes at threshold 1
            best_per_photo.append(iou_preds.max(dim=1).values.cpu().numpy())
    quantile = float(np.quantile(np.concatenate(best_per_photo), 1.0 - pass_share))
    head = generator.decoder.decoder.iou_prediction_head
    if getattr(head, "sigmoid_output", False):  # SAM 2: the bias shifts the logit of the predicted IoU
        shift = float(torch.logit(torch.tensor(threshold)) - torch.logit(torch.tensor(quantile))) + 1e-5
        shifted = [torch.sigmoid(torch.logit(torch.from_numpy(best)) + shift).numpy() for best in best_per_photo]
    else:
        shift = threshold - quantile + 1e-6
        shifted = [best + shift for best in best_per_photo]
    state = load_state_dict(args["sam_checkpoint"])
    key = iou_bias_key(args["sam_model"])
    state[key] = state[key] + shift
    if is_sam2_model(args["sam_model"]):
        state = {"model": state}  # SAM 2's layout
    path = folder / f"sam_{args['sam_model']}_pass{pass_share:g}.pth"
    torch.save(state, path)
    return str(path), [float(np.mean(best > threshold)) for best in shifted]


def run_side(side: str, args: dict, settings: dict, queue: multiprocessing.Queue) -> None:
    """One side of the comparison, in its own process; puts its timings and masks on ``queue``."""
    reset_peak_rss()
    import torch
    import torch.nn.functional as F
    from segment_anything import SamAutomaticMaskGenerator

    from gem_sam import AutoLabeller, build_gem_scorer, build_mask_generator
    from gem_sam.mask_ops import decode_rle
    from gem_sam.sam.parity import traced_reference_masks

    torch.set_grad_enabled(False)
    traces = []  # the reference's, one per image
    vocabulary = [name.replace("_", " ") for name in COCO_CLASSES.split()]  # the 80 COCO classes
    scorer = build_gem_scorer(model_name=args["clip_model"], pretrained=args["clip_checkpoint"], device=args["device"])
    generator = build_mask_generator(
        model_type=args["sam_model"], checkpoint=args["sam_checkpoint"], device=args["device"], **settings
    )
    if side == "ours":
        generator.times.enabled = True
        labeller = AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=vocabulary)
        generate = generator.generate
        name = labeller.name_masks
    else:
        if generator.config.family == "SAM 2":
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as reference_class
        else:
            reference_class = SamAutomaticMaskGenerator
        reference = reference_class(generator.model, output_mode="coco_rle", **generator.config.reference_kwargs())

        def generate(image):  # the reference's masks, and the trace of its candidates for the parity check
            records, trace = traced_reference_masks(reference, image)
            traces.append(trace)
            return records

        def name(image, records):  # the straightforward labelling: text per image, full-size maps
            text = scorer.encode_text(vocabulary)
            similarity = scorer.patch_similarity(scorer.preprocess(image), text)  # [1, C, h, w]
            maps = F.interpolate(similarity, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
            out = []
            for record in records:
                mask = torch.from_numpy(decode_rle(record["segmentation"]))
                pooled = maps[:, mask].mean(dim=1)
                out.append(int(pooled.argmax()))
            return out

    amg_seconds, label_seconds, all_records = [], [], []
    for index, image in enumerate(load_photos(args["images"])):
        if index == 1:
            generator.times.reset()  # the profile leaves out the warm-up image
        start = time.perf_counter()
        records = generate(image)
        middle = time.perf_counter()
        name(image, records)
        end = time.perf_counter()
        if index > 0:  # the first image warms up
            # recording the reference's trace is not the reference's work
            amg_seconds.append(middle - start - (traces[-1].seconds if traces else 0.0))
            label_seconds.append(end - middle)
            all_records.append(records)
    queue.put(
        {
            "amg_seconds": amg_seconds,
            "label_seconds": label_seconds,
            "records": all_records,
            "traces": traces[1:],
            "stage_seconds": {
                stage: seconds / max(1, len(amg_seconds)) for stage, seconds in generator.times.seconds.items()
            },
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def in_process(target, *args) -> dict:  # noqa: ANN001 - a function of (*args, queue)
    """``target(*args, queue)`` in a fresh process (so that its peak memory is its own); what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, help="timed images per scenario (plus one warm-up)")
    parser.add_argument(
        "--sam-model", default="vit_b", help="vit_b|vit_l|vit_h, or sam2.1_hiera_t|s|b+|l, sam2_hiera_* (SAM 2)"
    )
    parser.add_argument("--sam-checkpoint", default=None, help="SAM checkpoint (default: random-init, written here)")
    parser.add_argument("--clip-model", default="ViT-B-16")
    parser.add_argument("--clip-checkpoint", default=None, help="open_clip checkpoint file or tag (default: random)")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], nargs="+", default=["all"])
    parser.add_argument(
        "--pass-share",
        type=float,
        default=0.9,
        help="trained-like: share of grid prompts with a mask above pred_iou_thresh (default: 0.9)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    temporary = tempfile.TemporaryDirectory()
    if args.sam_checkpoint is None or args.clip_checkpoint is None:
        sam_path, clip_path = write_random_checkpoints(
            Path(temporary.name), sam_model=args.sam_model, clip_model=args.clip_model
        )
        args.sam_checkpoint = args.sam_checkpoint or sam_path
        args.clip_checkpoint = args.clip_checkpoint or clip_path
        print("weights: random-init checkpoints of the real architectures (no trained weights here)")
    side_args = {key: getattr(args, key) for key in ("images", "sam_model", "sam_checkpoint", "clip_model", "device")}
    side_args["clip_checkpoint"] = args.clip_checkpoint

    from gem_sam.sam.parity import check_parity

    results = {}
    scenarios = list(SCENARIOS) if "all" in args.scenario else args.scenario
    for scenario in scenarios:
        settings = SCENARIOS[scenario]
        scenario_args = dict(side_args)
        pass_shares = None
        if scenario == "trained-like":
            scenario_args["sam_checkpoint"], pass_shares = shift_iou_head(
                side_args, pass_share=args.pass_share, folder=Path(temporary.name)
            )
            print(f"[{scenario}] share of grid prompts passing the IoU filter, per photo: {np.round(pass_shares, 3)}")
        reference = in_process(run_side, "reference", scenario_args, settings)
        ours = in_process(run_side, "ours", scenario_args, settings)
        # an empty reference (no random-init mask survives) is compared too, and reported as such
        compared = zip(ours["records"], reference["records"], reference["traces"], strict=True)
        parities = [check_parity(a, b, trace, allow_empty=True) for a, b, trace in compared]
        ref_amg, our_amg = np.mean(reference["amg_seconds"]), np.mean(ours["amg_seconds"])
        ref_all = ref_amg + np.mean(reference["label_seconds"])
        our_all = our_amg + np.mean(ours["label_seconds"])
        results[scenario] = {
            "settings": settings,
            "images": args.images,
            "masks_per_image": [len(r) for r in ours["records"]],
            "reference_amg_seconds": float(ref_amg),
            "ours_amg_seconds": float(our_amg),
            "amg_speedup": float(ref_amg / our_amg),
            "reference_pipeline_seconds": float(ref_all),
            "ours_pipeline_seconds": float(our_all),
            "pipeline_speedup": float(ref_all / our_all),
            # the whole labelling of an image against our own image encoder's time in the same run
            "encoder_ratio": float(our_all / ours["stage_seconds"]["image encoder"]),
            "mask_parity": {
                "holds": all(p.holds() for p in parities),
                "matched_masks": sum(p.matched for p in parities),  # 0: both sides empty, nothing compared
                "explained_one_list_masks": sum(p.ours_only + p.reference_only for p in parities),
                "explained_pixels": sum(p.differing_pixels for p in parities),
                "max_iou_difference": max(p.max_iou_difference for p in parities),
                "unexplained": [line for p in parities for line in p.unexplained][:20],
            },
            "peak_rss_mb": {"reference": reference["peak_rss_mb"], "ours": ours["peak_rss_mb"]},
            "pass_share_per_photo": pass_shares,
            "ours_stage_seconds": ours["stage_seconds"],
        }
        row = results[scenario]
        print(
            f"[{scenario}] {args.sam_model}, 640x480, {args.images} image(s), masks/image {row['masks_per_image']}\n"
            f"  mask generator: reference {ref_amg:.1f} s, ours {our_amg:.1f} s, speed-up {row['amg_speedup']:.2f}x\n"
            f"  whole labelling: reference {ref_all:.1f} s, ours {our_all:.1f} s, "
            f"speed-up {row['pipeline_speedup']:.2f}x\n"
            f"  encoder ratio (ours: whole labelling / image encoder): {row['encoder_ratio']:.2f}\n"
            f"  parity: {row['mask_parity']}\n"
            f"  peak RSS: reference {reference['peak_rss_mb']:.0f} MB, ours {ours['peak_rss_mb']:.0f} MB\n"
            "  ours, seconds per image by stage: "
            + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in ours["stage_seconds"].items())
        )
    summary = dict(results[scenarios[0]])
    summary["mask_parity"] = all(r["mask_parity"]["holds"] for r in results.values())
    summary["scenarios"] = results
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
