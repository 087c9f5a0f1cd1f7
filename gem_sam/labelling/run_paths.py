"""Where a labelling run reads and writes, checked before any model is loaded.

A run reads the photos under ``--images`` and writes, beside ``--out``, files named after it
(``<out>``, ``<out>.records/``, ``<out>.report.json``, ``<out>.report.png``, ``<out>.skipped.json``),
and optionally overlays into ``--save-overlays``:

- ``--out`` may lie inside ``--images`` (``photos/annotations.json`` is a common layout): the search
  for photos then leaves out every file named after ``--out``, and any run report picture
  (``<name>.report.png`` beside its ``<name>.report.json``), so no run labels what a run wrote;
- an existing ``--out`` must be a gem_sam annotations file, so that no other file (a photo, a
  dataset of another tool) is replaced by one;
- the overlay folder may neither be, lie inside, nor hold ``--images``: an overlay written among the
  photos replaces a photo of the same name, or is found and labelled by the next run.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..images import find_images
from ..paths import is_within, overlapping

GEM_SAM_COCO_START = b'{"info": {"description": "gem_sam"'  # how every COCO file a labelling run writes starts


def check_run_paths(
    *, images_dir: str | os.PathLike, out_path: str | os.PathLike, overlay_dir: str | os.PathLike | None
) -> None:
    """Refuse outputs that would replace or mix with the inputs; raises ``ValueError`` naming the paths."""
    out = Path(out_path)
    if out.is_file():
        with open(out, "rb") as handle:
            start = handle.read(len(GEM_SAM_COCO_START))
        if start != GEM_SAM_COCO_START:
            raise ValueError(
                f"--out {str(out)!r} exists and is not a gem_sam annotations file; it would be replaced. "
                "Give another file name"
            )
    if overlay_dir is not None and overlapping(overlay_dir, images_dir):
        relation = "is" if Path(overlay_dir).resolve() == Path(images_dir).resolve() else "overlaps"
        raise ValueError(
            f"--save-overlays {str(overlay_dir)!r} {relation} the image folder {str(images_dir)!r}: overlays would "
            "replace photos of the same name or be labelled by the next run. Choose a folder outside it"
        )
    if overlay_dir is not None and is_within(out, overlay_dir):
        raise ValueError(f"--out {str(out)!r} lies inside --save-overlays {str(overlay_dir)!r}; keep them apart")


def written_by_a_run(path: Path, out_path: Path) -> bool:
    """Whether ``path`` (a file found under the image folder) is this run's output (named after
    ``out_path``) or a run report's picture."""
    if path.parent.resolve() == out_path.resolve().parent and (
        path.name == out_path.name or path.name.startswith(f"{out_path.name}.")
    ):
        return True
    name = path.name
    return name.endswith(".report.png") and path.with_name(name[: -len(".png")] + ".json").is_file()


def find_run_images(images_dir: str | os.PathLike, out_path: str | os.PathLike) -> list[Path]:
    """The photos a run labels (relative paths, sorted): ``find_images`` without what runs wrote there."""
    root, out = Path(images_dir), Path(out_path)
    return [relative for relative in find_images(root) if not written_by_a_run(root / relative, out)]
