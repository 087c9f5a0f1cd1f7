"""``gem-sam``: one command with a subcommand per task, the way ``yolo`` and ``fiftyone`` work.

    gem-sam label --images photos/ --vocab vocab.txt --out annotations.json
    gem-sam label-video --video clip.mp4 --vocab vocab.txt --out tracks.json
    gem-sam export annotations.json --to yolo-seg --out dataset/
    gem-sam evaluate ...            (OpenImages V7 points, Table 3)
    gem-sam evaluate-dense ...      (VOC, Pascal Context, ADE20K)

Each subcommand is exactly the matching ``python -m gem_sam.<module>``: the same parser and ``main``,
with the command's name in its help. Subcommand modules are imported only when they run.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from .. import __version__


@dataclass(frozen=True)
class Command:
    module: str  # the gem_sam.cli module with build_parser and main
    summary: str  # one line for the command list


COMMANDS: dict[str, Command] = {
    "label": Command("gem_sam.cli.label", "auto-label a folder of images with open-vocabulary masks (COCO JSON)"),
    "label-video": Command(
        "gem_sam.cli.label_video", "label videos with tracked open-vocabulary masks (YouTube-VIS JSON)"
    ),
    "export": Command("gem_sam.cli.export", "export a run to YOLO-seg, COCO polygons, semantic maps or FiftyOne"),
    "evaluate": Command("gem_sam.cli.evaluate", "p-mIoU on OpenImages V7 point labels (the paper's Table 3)"),
    "evaluate-dense": Command(
        "gem_sam.cli.evaluate_dense", "mIoU on Pascal VOC, Pascal Context and ADE20K (Tables 1, 2, 4, 6)"
    ),
    "import-reviewed": Command(
        "gem_sam.cli.import_reviewed",
        "Label Studio's export after review -> a gem_sam COCO file",
    ),
    "serve": Command("gem_sam.cli.serve", "a Label Studio ML backend that predicts gem_sam's masks"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: gem-sam COMMAND [OPTIONS]",
        "",
        "Open-vocabulary auto-labelling: SAM grid masks named by GEM (Grounding Everything).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        "'gem-sam COMMAND --help' lists the options of a command; 'gem-sam --version' prints the version.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"gem_sam {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"gem-sam: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        print("'gem-sam --help' describes them", file=sys.stderr)
        return 2
    return importlib.import_module(command.module).main(rest, prog=f"gem-sam {name}")
