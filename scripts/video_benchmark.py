"""Speed and memory of ``gem-sam label-video`` against SAM 2's video predictor alone, in one run.

    python scripts/video_benchmark.py --frames 16 --json video_benchmark.json

A 480p clip (854x480: a window panning across a real photo) of ``--frames`` frames, and one 4x as long,
go through:

* ours: the whole labelling of ``gem_sam.video`` (keyframe masks with the grid generator, propagation
  with ``SAM2VideoPredictor`` window by window, naming with GEM), each length in a fresh process, with
  the time per stage and the process's peak resident memory;
* the reference: ``SAM2VideoPredictor`` alone (``init_state`` on the clip's JPEG folder, which holds every
  frame in memory, ``add_new_mask`` with our tracks' masks on frame 0, ``propagate_in_video``), on the
  1x clip, in a fresh process.

Without checkpoint files, random-init checkpoints of the real architectures are written (no trained
weights are available to this project's machines), with SAM's IoU head shifted as in
``scripts/benchmark.py``'s trained-like scenario so that grid masks pass the IoU filter, and its mask
logits scaled as in the tests; the stability threshold is loosened so that random-init masks survive.
Random-init masks are not objects, so how many tracks a clip gets is not what a trained model gives: the
figures are per frame and per track.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

WIDTH, HEIGHT = 854, 480


def write_clip(folder: Path, frames: int) -> Path:
    """JPEG frames 00000.jpg, ... of a 854x480 window panning right over an upscaled real photo."""
    import skimage
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
    photo = photo.resize((WIDTH + 4 * frames + 8, int((WIDTH + 4 * frames + 8) * photo.height / photo.width)))
    for index in range(frames):
        photo.crop((index * 4, 40, index * 4 + WIDTH, 40 + HEIGHT)).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


def run_ours(args: dict, clip: str, out: str, queue) -> None:  # noqa: ANN001 - a multiprocessing queue
    import torch
    from benchmark import peak_rss_mb, reset_peak_rss

    reset_peak_rss()
    from gem_sam.labelling.config import LabelConfig
    from gem_sam.labelling.spec import LabellerSpec
    from gem_sam.sam import Sam2GeneratorConfig
    from gem_sam.video import VideoConfig, VideoLabellerSpec, label_videos

    torch.set_grad_enabled(False)
    spec = VideoLabellerSpec(
        labeller=LabellerSpec(
            vocabulary=("person", "rocket", "flag", "sky", "ground"),
            clip_model=args["clip_model"],
            pretrained=args["clip_checkpoint"],
            sam_model=args["sam_model"],
            sam_checkpoint=args["sam_checkpoint"],
            generator=Sam2GeneratorConfig(stability_score_thresh=args["stability_score_thresh"]),
            labelling=LabelConfig(),
            device=args["device"],
        ),
        video=VideoConfig(),
    )
    labeller = spec.build()
    labeller.times.enabled = True
    start = time.perf_counter()
    summary = label_videos(labeller, videos=[clip], out_path=out, settings=spec.settings(), inputs=clip, progress=False)
    seconds = time.perf_counter() - start
    data = json.loads(Path(out).read_text())
    queue.put(
        {
            "seconds": seconds,
            "frames": summary.videos[0].frames,
            "tracks_started": summary.videos[0].started,
            "tracks_written": len(data["annotations"]),
            "stage_seconds": labeller.times.seconds,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def run_reference(args: dict, clip: str, tracks: str, queue) -> None:  # noqa: ANN001
    import torch
    from benchmark import peak_rss_mb, reset_peak_rss

    reset_peak_rss()
    from gem_sam.mask_ops import decode_rle
    from gem_sam.sam import load_sam2

    torch.set_grad_enabled(False)
    model = load_sam2(
        model_type=args["sam_model"], checkpoint=args["sam_checkpoint"], device=args["device"], video=True
    )
    data = json.loads(Path(tracks).read_text())
    seeds = {t["track_id"]: decode_rle(t["segmentations"][0]) for t in data["annotations"] if t["segmentations"][0]}
    start = time.perf_counter()
    state = model.init_state(clip)
    for track_id, mask in seeds.items():
        model.add_new_mask(state, frame_idx=0, obj_id=track_id, mask=mask)
    frames = sum(1 for _ in model.propagate_in_video(state))
    seconds = time.perf_counter() - start
    queue.put(
        {
            "seconds": seconds,
            "frames": frames,
            "objects": len(seeds),
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def scale_mask_logits(checkpoint: str, folder: Path, factor: float = 40.0) -> str:
    """A copy of a SAM 2 checkpoint whose mask logits are ``factor`` times larger (the hypernetworks'
    last layers): random-init logits are all near 0, so every mask is unstable and none survives."""
    import torch

    from gem_sam.weights import load_state_dict

    state = load_state_dict(checkpoint)
    for key in [
        k for k in state if k.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and "layers.2.weight" in k
    ]:
        state[key] = state[key] * factor
    path = folder / "sam2_scaled.pt"
    torch.save({"model": state}, path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames of the 1x clip (default: 16)")
    parser.add_argument("--sam-model", default="sam2.1_hiera_t")
    parser.add_argument("--sam-checkpoint", default=None, help="default: random-init, IoU head shifted (trained-like)")
    parser.add_argument("--clip-model", default="ViT-B-16")
    parser.add_argument("--clip-checkpoint", default=None)
    parser.add_argument("--stability-score-thresh", type=float, default=0.3, help="loosened for random-init masks")
    parser.add_argument("--pass-share", type=float, default=0.9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from benchmark import in_process, shift_iou_head, write_random_checkpoints

    temporary = Path(tempfile.mkdtemp())
    side = {"sam_model": args.sam_model, "clip_model": args.clip_model, "device": args.device, "images": 1,
            "stability_score_thresh": args.stability_score_thresh}  # fmt: skip
    if args.sam_checkpoint is None or args.clip_checkpoint is None:
        sam_path, clip_path = write_random_checkpoints(temporary, sam_model=args.sam_model, clip_model=args.clip_model)
        side["sam_checkpoint"], side["clip_checkpoint"] = (
            args.sam_checkpoint or sam_path,
            args.clip_checkpoint or clip_path,
        )
        side["sam_checkpoint"], shares = shift_iou_head(side, pass_share=args.pass_share, folder=temporary)
        side["sam_checkpoint"] = scale_mask_logits(side["sam_checkpoint"], temporary)
        print(
            f"weights: random-init, IoU head shifted (share of grid prompts passing {np.round(shares, 3)}), mask "
            "logits scaled 40x as in the tests, so that masks differ from point to point"
        )
    else:
        side["sam_checkpoint"], side["clip_checkpoint"] = args.sam_checkpoint, args.clip_checkpoint
    results = {}
    for factor in (1, 4):
        clip = write_clip(temporary / f"clip_{factor}x", args.frames * factor)
        out = temporary / f"tracks_{factor}x.json"
        results[f"ours_{factor}x"] = in_process(run_ours, side, str(clip), str(out))
        row = results[f"ours_{factor}x"]
        print(
            f"ours, {factor}x ({row['frames']} frames of {WIDTH}x{HEIGHT}): {row['seconds']:.1f} s, "
            f"{row['frames'] / row['seconds']:.3f} frames/s, {row['tracks_written']} tracks, peak RSS "
            f"{row['peak_rss_mb']:.0f} MB; by stage: "
            + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in row["stage_seconds"].items())
        )
    if not results["ours_1x"]["tracks_written"]:
        print("no track on frame 0 of the 1x clip: the reference has nothing to propagate")
        return 1
    reference = in_process(run_reference, side, str(temporary / "clip_1x"), str(temporary / "tracks_1x.json"))
    results["reference_1x"] = reference
    print(
        f"SAM2VideoPredictor alone, 1x, {reference['objects']} objects seeded on frame 0: "
        f"{reference['seconds']:.1f} s, "
        f"{reference['frames'] / reference['seconds']:.3f} frames/s, peak RSS {reference['peak_rss_mb']:.0f} MB"
    )
    growth = results["ours_4x"]["peak_rss_mb"] / results["ours_1x"]["peak_rss_mb"] - 1
    results["peak_rss_growth_4x"] = growth
    print(f"peak RSS, 4x the length against 1x: {100 * growth:+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
