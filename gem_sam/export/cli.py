"""Command line: export a finished run's COCO file for trainers and review tools.

python -m gem_sam.export annotations.json --to yolo-seg --out dataset/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..cli_args import USER_ERRORS, add_quality_arguments, quality_from_args
from .coco_polygons import export_coco_polygons
from .fiftyone_dataset import load_fiftyone_dataset
from .semantic import OVERLAP_RULES, export_semantic
from .source import read_run_output
from .stats import ExportStats
from .yolo import export_yolo_seg

FORMATS: tuple[str, ...] = ("yolo-seg", "coco-polygons", "semantic", "fiftyone")
DEFAULT_MIN_POLYGON_AREA = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gem_sam.export",
        description=(
            "Export the COCO file of a gem_sam.label run: yolo-seg (Ultralytics dataset layout), coco-polygons "
            "(polygon segmentations), semantic (one PNG label map per image) or fiftyone (a FiftyOne dataset to "
            "browse). The dataset quality controls can be applied on the way."
        ),
    )
    parser.add_argument("annotations", metavar="ANNOTATIONS_JSON", help="the COCO file that gem_sam.label wrote")
    parser.add_argument("--to", required=True, choices=FORMATS, help="export format")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (must be empty unless --overwrite); not for fiftyone"
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="the folder that was labelled (default: the one recorded in the COCO file); yolo-seg and fiftyone",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out / replace the dataset")
    parser.add_argument("--copy-images", action="store_true", help="yolo-seg: copy the images instead of linking them")
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
    add_quality_arguments(parser)
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def prepare_out_dir(path: str, *, overwrite: bool) -> Path:
    """The output folder, created; a non-empty one is refused unless ``overwrite``."""
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {path!r} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {path!r} is not empty; choose an empty folder or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.to != "fiftyone" and not args.out:
        parser.error(f"--to {args.to} needs --out DIR")
    if args.copy_images and args.to != "yolo-seg":
        parser.error("--copy-images applies to --to yolo-seg only")
    try:
        if args.min_polygon_area < 0:
            raise ValueError(f"--min-polygon-area {args.min_polygon_area:g} must be 0 or more")
        run = read_run_output(args.annotations, images_dir=args.images, controls=quality_from_args(args))
        stats: ExportStats
        if args.to == "fiftyone":
            name = args.dataset_name or Path(args.annotations).stem
            _, stats = load_fiftyone_dataset(run, name=name, overwrite=args.overwrite)
            destination = f"FiftyOne dataset {name!r} (open it with: fiftyone app launch {name})"
        else:
            out_dir = prepare_out_dir(args.out, overwrite=args.overwrite)
            if args.to == "yolo-seg":
                stats = export_yolo_seg(
                    run, out_dir, copy_images=args.copy_images, min_polygon_area=args.min_polygon_area
                )
            elif args.to == "coco-polygons":
                stats = export_coco_polygons(run, out_dir, min_polygon_area=args.min_polygon_area)
            else:
                stats = export_semantic(run, out_dir, overlap=args.overlap)
            destination = str(out_dir)
    except (*USER_ERRORS, FileExistsError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in stats.lines():
        print(line)
    print(f"wrote {destination}")
    return 0
