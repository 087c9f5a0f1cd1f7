"""Command line: export a finished run's COCO file for trainers and review tools.

python -m gem_sam.export annotations.json --to yolo-seg --out dataset/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..export.coco_polygons import export_coco_polygons
from ..export.fiftyone_dataset import load_fiftyone_dataset
from ..export.layout import plan_images, renames
from ..export.mot import export_mot
from ..export.out_folder import check_out_folder, staged_export
from ..export.polygons import DEFAULT_MIN_POLYGON_AREA
from ..export.semantic import OVERLAP_RULES, export_semantic
from ..export.source import RunOutput, read_run_output
from ..export.stats import ExportStats
from ..export.video_fiftyone import load_fiftyone_video_dataset
from ..export.video_yolo import export_video_yolo_seg
from ..export.yolo import export_yolo_seg
from ..video.vis import is_tracks_file, read_tracks
from .args import USER_ERRORS, add_quality_arguments, quality_from_args

FORMATS: tuple[str, ...] = ("yolo-seg", "coco-polygons", "semantic", "fiftyone", "label-studio", "mot")
VIDEO_FORMATS: tuple[str, ...] = ("mot", "yolo-seg", "fiftyone", "label-studio")  # of a tracks.json
FOLDER_FORMATS: tuple[str, ...] = ("yolo-seg", "coco-polygons", "semantic")  # write --out with images
SPLIT_FORMATS: tuple[str, ...] = ("yolo-seg", "coco-polygons")


def build_parser(*, prog: str = "python -m gem_sam.export") -> argparse.ArgumentParser:
    """The options; ``prog`` names the command in the help (``gem-sam export`` or the module)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Export the COCO file of a gem_sam.label run: yolo-seg (Ultralytics dataset layout), coco-polygons "
            "(polygon segmentations), semantic (one PNG label map per image), fiftyone (a FiftyOne dataset to "
            "browse) or label-studio (tasks with brush predictions and a labelling config, to review). The dataset "
            "quality controls can be applied on the way. The tracks.json of gem-sam label-video exports to mot "
            "(MOTChallenge boxes), yolo-seg (every labelled frame), fiftyone (a video dataset) or label-studio "
            "(video tasks with a VideoRectangle per track)."
        ),
    )
    parser.add_argument(
        "annotations",
        metavar="ANNOTATIONS_JSON",
        help="the COCO file that gem-sam label wrote, or the tracks.json of gem-sam label-video (to mot, yolo-seg, "
        "fiftyone or label-studio)",
    )
    parser.add_argument("--to", required=True, choices=FORMATS, help="export format")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (must be empty unless --overwrite); not for fiftyone"
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="the folder that was labelled (default: the one recorded in the COCO file); yolo-seg and fiftyone",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files an earlier gem_sam export wrote in --out (anything else there is left and named) / "
        "replace the FiftyOne dataset",
    )
    parser.add_argument(
        "--copy-images",
        action="store_true",
        help="yolo-seg, coco-polygons, semantic: copy the images instead of linking them "
        "(EXIF-rotated photos are always written as upright copies)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="yolo-seg, coco-polygons: put this fraction of the images (drawn with --seed) into a validation "
        "split (default: no split; yolo-seg then trains and validates on all images)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the --val-fraction draw (default: 0); same seed, same split"
    )
    parser.add_argument(
        "--min-polygon-area",
        type=float,
        default=DEFAULT_MIN_POLYGON_AREA,
        metavar="PX",
        help="yolo-seg, coco-polygons: drop mask pieces whose polygon area is below PX square pixels "
        f"(default: {DEFAULT_MIN_POLYGON_AREA:g})",
    )
    parser.add_argument(
        "--overlap",
        default="score",
        choices=OVERLAP_RULES,
        help="semantic: where masks overlap, the pixel goes to the highest score or to the smallest mask "
        "(default: score)",
    )
    parser.add_argument("--dataset-name", metavar="NAME", help="fiftyone: dataset name (default: the file's stem)")
    parser.add_argument(
        "--fps",
        type=float,
        default=30.0,
        help="videos given as frame folders: the frame rate of the MP4 encoded for FiftyOne and Label Studio "
        "(default: 30)",
    )
    parser.add_argument(
        "--document-root",
        metavar="DIR",
        help="label-studio: the folder Label Studio serves local files from (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); "
        "image URLs are /data/local-files/?d=<path under it> (default: the labelled folder)",
    )
    parser.add_argument(
        "--image-url-prefix",
        metavar="URL",
        help="label-studio: images are served elsewhere: their URL is this prefix + the file name",
    )
    parser.add_argument(
        "--review-first",
        type=int,
        default=None,
        metavar="N",
        help="label-studio: export only the N images of highest review priority (whose largest masks' names "
        "are least sure), least sure first; every task's prediction score is 1 - its priority, so Label Studio's "
        "sort by prediction score and uncertainty sampling show the least sure first anyway",
    )
    add_quality_arguments(parser)
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def export_to_folder(args: argparse.Namespace, run: RunOutput) -> tuple[ExportStats, str]:
    """A folder export (yolo-seg, coco-polygons, semantic, label-studio): every check before the first
    write, then the export staged beside --out and swapped in. Returns the summary and where it went."""
    inputs = {"the annotations file": Path(args.annotations), "the labelled images": run.images_dir}
    photo_folder = run.images_dir if args.to in FOLDER_FORMATS else None  # exports that write images
    folder = check_out_folder(args.out, overwrite=args.overwrite, inputs=inputs, photo_folder=photo_folder)
    if args.to == "label-studio":
        from ..review.label_studio import export_label_studio, label_studio_tasks

        root = Path(args.document_root) if args.document_root else None
        tasks = label_studio_tasks(
            run, document_root=root, image_url_prefix=args.image_url_prefix, review_first=args.review_first
        )
        with staged_export(folder, export_format=args.to) as staging:
            stats = export_label_studio(run, staging, tasks=tasks)
        stats.kept = folder.kept_lines()
        return stats, f"{folder.path} (label_config.xml, tasks.json)"
    placed = plan_images(run.images, run.image_path, val_fraction=args.val_fraction, seed=args.seed)
    options = {"copy_images": args.copy_images, "placed": placed}
    polygons = {"min_polygon_area": args.min_polygon_area, "final_dir": folder.path}
    with staged_export(folder, export_format=args.to) as staging:
        if args.to == "yolo-seg":
            stats = export_yolo_seg(run, staging, **polygons, **options)
        elif args.to == "coco-polygons":
            stats = export_coco_polygons(run, staging, **polygons, **options)
        else:
            stats = export_semantic(run, staging, overlap=args.overlap, **options)
    stats.renamed = renames(placed)
    stats.upright_copies = sum(item.rotated for item in placed)
    stats.kept = folder.kept_lines()
    return stats, str(folder.path)


def export_tracks(args: argparse.Namespace) -> tuple[ExportStats, str]:
    """An export of a ``tracks.json`` (videos): mot, yolo-seg, fiftyone or label-studio."""
    if args.to not in VIDEO_FORMATS:
        raise ValueError(f"--to {args.to} exports images; a tracks.json exports to {', '.join(VIDEO_FORMATS)}")
    tracks_data = read_tracks(args.annotations)
    if args.to == "fiftyone":
        name = args.dataset_name or Path(args.annotations).stem
        folder = check_out_folder(args.out, overwrite=args.overwrite, inputs=video_inputs(args)) if args.out else None
        if folder is None:
            _, stats = load_fiftyone_video_dataset(tracks_data, name=name, overwrite=args.overwrite, out_dir=None)
        else:
            with staged_export(folder, export_format="fiftyone-video") as staging:
                dataset, stats = load_fiftyone_video_dataset(
                    tracks_data, name=name, overwrite=args.overwrite, out_dir=staging, final_dir=folder.path
                )
            dataset.compute_metadata()  # ffprobe, on the videos where they now are
        return stats, f"FiftyOne video dataset {name!r} (open it with: fiftyone app launch {name})"
    folder = check_out_folder(args.out, overwrite=args.overwrite, inputs=video_inputs(args))
    with staged_export(folder, export_format=f"{args.to}-video") as staging:
        if args.to == "mot":
            stats = export_mot(tracks_data, staging)
        elif args.to == "yolo-seg":
            stats = export_video_yolo_seg(
                tracks_data, staging, min_polygon_area=args.min_polygon_area, copy_images=args.copy_images,
                val_fraction=args.val_fraction, seed=args.seed, final_dir=folder.path,
            )  # fmt: skip
        else:
            from ..review.label_studio_video import export_label_studio_video

            root = Path(args.document_root) if args.document_root else None
            stats = export_label_studio_video(
                tracks_data, staging, final_dir=folder.path, document_root=root, url_prefix=args.image_url_prefix,
                fps=args.fps,
            )  # fmt: skip
    stats.kept = folder.kept_lines()
    return stats, str(folder.path)


def video_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """What a video export reads: the tracks file and each video's source."""
    sources = {
        f"the video {Path(v['source']).name}": Path(v["source"]) for v in read_tracks(args.annotations)["videos"]
    }
    return {"the tracks file": Path(args.annotations), **sources}


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.export") -> int:
    parser = build_parser(prog=prog)
    args = parser.parse_args(argv)
    if args.to != "fiftyone" and not args.out:
        parser.error(f"--to {args.to} needs --out DIR")
    if args.copy_images and args.to not in FOLDER_FORMATS:
        parser.error(f"--copy-images applies to --to {', '.join(FOLDER_FORMATS)}")
    if args.val_fraction is not None and args.to not in SPLIT_FORMATS:
        parser.error(f"--val-fraction applies to --to {', '.join(SPLIT_FORMATS)}")
    if (args.document_root or args.image_url_prefix) and args.to != "label-studio":
        parser.error("--document-root and --image-url-prefix apply to --to label-studio")
    if args.review_first is not None and args.to != "label-studio":
        parser.error("--review-first applies to --to label-studio")
    if args.document_root and args.image_url_prefix:
        parser.error("give --document-root or --image-url-prefix, not both")
    try:
        if args.min_polygon_area < 0:
            raise ValueError(f"--min-polygon-area {args.min_polygon_area:g} must be 0 or more")
        stats: ExportStats
        if is_tracks_file(args.annotations):
            stats, destination = export_tracks(args)
        elif args.to == "mot":
            raise ValueError(
                f"--to mot exports tracks: {args.annotations!r} is not a tracks.json of gem-sam label-video"
            )
        elif args.to == "fiftyone":
            run = read_run_output(args.annotations, images_dir=args.images, controls=quality_from_args(args))
            name = args.dataset_name or Path(args.annotations).stem
            _, stats = load_fiftyone_dataset(run, name=name, overwrite=args.overwrite)
            destination = f"FiftyOne dataset {name!r} (open it with: fiftyone app launch {name})"
        else:
            run = read_run_output(args.annotations, images_dir=args.images, controls=quality_from_args(args))
            stats, destination = export_to_folder(args, run)
    except (*USER_ERRORS, FileExistsError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in stats.lines():
        print(line)
    print(f"wrote {destination}")
    return 0
