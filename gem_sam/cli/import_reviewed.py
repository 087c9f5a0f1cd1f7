"""Command line: Label Studio's JSON export after review -> a gem_sam COCO file of the reviewed labels.

python -m gem_sam.import_reviewed EXPORT.json --run annotations.json --out reviewed.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..export.source import read_run_output
from ..review.reviewed import UNREVIEWED_RULES, import_reviewed
from .args import USER_ERRORS, require_writable_file


def build_parser(*, prog: str = "python -m gem_sam.import_reviewed") -> argparse.ArgumentParser:
    """The options; ``prog`` names the command in the help (``gem-sam import-reviewed`` or the module)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Read a Label Studio project's JSON export after review (tasks made by 'gem_sam.export --to "
            "label-studio') and write the reviewed labels as a gem_sam COCO file, which every export reads. Per "
            "task the latest submitted annotation counts: brush regions decoded exactly, polygons rasterised; "
            "classes as the reviewer set them. Prints and records what was kept, edited, added and deleted."
        ),
    )
    parser.add_argument("export", metavar="EXPORT_JSON", help="Label Studio's export of the project (JSON format)")
    parser.add_argument("--run", required=True, metavar="FILE", help="the annotations.json the tasks came from")
    parser.add_argument("--out", required=True, metavar="FILE", help="the reviewed COCO file to write")
    parser.add_argument(
        "--unreviewed",
        choices=UNREVIEWED_RULES,
        default="drop",
        help="tasks nobody reviewed: leave them out (drop, default) or keep their predictions (keep)",
    )
    parser.add_argument("--images", metavar="DIR", help="the labelled folder (default: the one the run recorded)")
    parser.add_argument("--version", action="version", version=f"gem_sam {__version__}")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m gem_sam.import_reviewed") -> int:
    args = build_parser(prog=prog).parse_args(argv)
    try:
        out = require_writable_file(args.out, option="--out")
        for what, source in (("the run's own file", args.run), ("the Label Studio export it reads", args.export)):
            if out.resolve() == Path(source).resolve():
                raise ValueError(f"--out {args.out!r} is {what}; write the reviewed labels to another file")
        run = read_run_output(args.run, images_dir=args.images)
        counts = import_reviewed(args.export, run, out, unreviewed=args.unreviewed)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in counts.lines():
        print(line)
    print(f"wrote {args.out}")
    return 0
