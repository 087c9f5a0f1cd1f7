"""Command line: label videos with SAM 2.1 tracks whose ids last, each named by GEM over its whole life.

python -m gem_sam.label_video --video clip.mp4 --vocab vocab.txt --out tracks.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..run_store import RunMismatchError, check_resumable
from ..video.frames import VideoReadError, find_videos, open_video
from ..video.pipeline import VideoConfig
from ..video.tracking import TrackingConfig
from .args import (
    USER_ERRORS,
    add_ray_arguments,
    quality_from_args,
    ray_address,
    require_writable_file,
)
from .label import add_labeller_arguments, add_vocabulary_argument, labeller_spec_from_args

DEFAULT_VIDEO_SAM_MODEL = "sam2.1_hiera_l"


def build_parser(*, prog: str = "python -m gem_sam.label_video") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Label videos with open-vocabulary masks that are tracked: on keyframes gem_sam's grid generator finds "
            "every mask and keeps the ids of the tracks they match; SAM 2's video predictor propagates the tracks "
            "between keyframes; each track is named once, from GEM's similarities averaged over the frames it is "
            "seen on. Writes YouTube-VIS (tracks.json). Runs resume from the last finished window."
        ),
    )
    io = parser.add_argument_group("input and output")
    source = io.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--video", metavar="PATH", help="a video file (mp4, mov, avi, mkv, webm) or a folder of frames (00000.jpg, ...)"
    )
    source.add_argument(
        "--videos", metavar="DIR", help="a folder of videos (files and frame folders): each is labelled; "
        "one that cannot be read is skipped and reported"
    )  # fmt: skip
    add_vocabulary_argument(io)
    io.add_argument(
        "--out", default="tracks.json", metavar="FILE", help="YouTube-VIS file to write (default: tracks.json)"
    )
    io.add_argument("--restart", action="store_true", help="discard results of an earlier run into --out")
    io.add_argument("--quiet", action="store_true", help="no progress bars")

    tracking = parser.add_argument_group("tracking")
    defaults = TrackingConfig()
    tracking.add_argument(
        "--frame-stride", type=int, default=1, metavar="K", help="label every K-th frame (default: 1)"
    )
    tracking.add_argument(
        "--keyframe-every", type=int, default=defaults.keyframe_every, metavar="N",
        help=f"find masks with the grid generator on frame 0 and every N frames (default: {defaults.keyframe_every})",
    )  # fmt: skip
    tracking.add_argument(
        "--match-iou", type=float, default=defaults.match_iou, metavar="IOU",
        help=f"mask IoU at which a keyframe mask keeps a live track's id (default: {defaults.match_iou:g})",
    )  # fmt: skip
    tracking.add_argument(
        "--max-lost-frames", type=int, default=defaults.max_lost_frames, metavar="N",
        help="a track whose mask is empty for more than N frames in a row ends; within them a keyframe mask "
        f"where it was last seen brings it back with its id (default: {defaults.max_lost_frames})",
    )  # fmt: skip
    tracking.add_argument(
        "--name-every", type=int, default=None, metavar="M",
        help="also pool GEM's similarities in each track every M frames, besides the keyframes "
        "(default: keyframes only)",
    )  # fmt: skip
    tracking.add_argument(
        "--sam-image-size", type=int, default=None, metavar="PX",
        help="SAM 2's square input side (default: the model's, 1024). Smaller is faster and coarser; the "
        "official weights were trained at 1024",
    )  # fmt: skip
    run = add_labeller_arguments(parser, default_sam_model=DEFAULT_VIDEO_SAM_MODEL)
    add_ray_arguments(run, what="label the videos of --videos, one video per task,")
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def video_spec_from_args(args: argparse.Namespace):  # noqa: ANN201 - VideoLabellerSpec
    from ..video.spec import VideoLabellerSpec

    quality = quality_from_args(args)
    if quality.dedupe_iou is not None or quality.drop_parts is not None:
        raise ValueError(
            "--dedupe-iou and --drop-parts do not apply to videos: tracks never overlap in a video's output; "
            "--min-similarity and --max-masks-per-image (tracks per video) do"
        )
    labeller = labeller_spec_from_args(args)
    tracking = TrackingConfig(
        keyframe_every=args.keyframe_every, match_iou=args.match_iou, max_lost_frames=args.max_lost_frames
    )
    video = VideoConfig(tracking=tracking, frame_stride=args.frame_stride, name_every=args.name_every)
    if args.sam_image_size is not None and (args.sam_image_size < 64 or args.sam_image_size % 64):
        raise ValueError(f"--sam-image-size {args.sam_image_size} must be a multiple of 64 (SAM 2's Hiera strides)")
    return VideoLabellerSpec(labeller=labeller, video=video, sam_image_size=args.sam_image_size)


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.label_video") -> int:
    parser = build_parser(prog=prog)
    args = parser.parse_args(argv)
    if args.ray is not None and args.videos is None:
        parser.error("--ray labels one video per task: give a folder of videos with --videos")
    try:
        require_writable_file(args.out, option="--out")
        inputs = Path(args.video or args.videos)
        if args.video is not None:
            open_video(args.video, frame_stride=max(1, args.frame_stride)).close()  # refused in one line, early
            videos = [Path(args.video)]
        else:
            videos = find_videos(args.videos)
            if not videos:
                raise FileNotFoundError(f"--videos {args.videos!r} holds no video file or frame folder")
        spec = video_spec_from_args(args)
        if not args.restart:  # refused before any model is loaded
            check_resumable(args.out, settings=spec.settings(), images_dir=inputs)
        run = {"videos": videos, "out_path": args.out, "inputs": inputs, "restart": args.restart,
               "progress": not args.quiet}  # fmt: skip
        if args.ray is not None:
            from ..video.ray_engine import label_videos_ray

            summary = label_videos_ray(spec, address=ray_address(args), workers=args.ray_workers, **run)
        else:
            from ..video.pipeline import label_videos

            video_labeller = spec.build()
            summary = label_videos(video_labeller, settings=spec.settings(), **run)
            if video_labeller.propagator.hole_filling_skipped:
                summary.notes.append(
                    "sam2's optional CUDA extension is not installed, so SAM2VideoPredictor skipped its hole filling "
                    "(holes up to 8 pixels in the low-resolution masks), as it does without it"
                )
    except (*USER_ERRORS, VideoReadError, RunMismatchError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    print(f"wrote {args.out}")
    return 0
