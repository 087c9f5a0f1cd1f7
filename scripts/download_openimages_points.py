"""Download OpenImages V7 point labels, class names and some validation images.

    python scripts/download_openimages_points.py --out data/openimages --images 500

Writes the layout ``gem_sam.evaluate`` reads::

    data/openimages/oidv7-val-annotations-point-labels.csv
    data/openimages/oidv7-class-descriptions.csv
    data/openimages/images/{ImageId}.jpg

The images are a reproducible draw (``--seed``) from the ids of the point-label file, fetched from the
public Open Images bucket. Every file is written under a temporary name and renamed when complete, so
an interrupted run is resumed by running it again: finished files are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gem_sam.evaluation.openimages import list_image_ids, select_image_ids  # noqa: E402

BASE = "https://storage.googleapis.com/openimages/v7"
FILES = {
    "points": f"{BASE}/oidv7-val-annotations-point-labels.csv",
    "classes": f"{BASE}/oidv7-class-descriptions.csv",
}
IMAGE_URL = "https://open-images-dataset.s3.amazonaws.com/{split}/{image_id}.jpg"


def image_url(image_id: str, *, split: str = "validation") -> str:
    return IMAGE_URL.format(split=split, image_id=image_id)


def fetch(url: str, target: Path) -> bool:
    """Download ``url`` to ``target`` unless it exists; True if it was downloaded now."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        os.replace(partial, target)
        return True
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def plan_images(points_csv: Path, *, count: int | None, seed: int, folder: Path) -> list[tuple[str, Path]]:
    """(url, target) of the drawn images that are not on disk yet."""
    ids = select_image_ids(list_image_ids(points_csv), limit=count, seed=seed)
    return [(image_url(i), folder / f"{i}.jpg") for i in ids if not (folder / f"{i}.jpg").exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="target folder")
    parser.add_argument("--images", type=int, default=500, help="number of validation images (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image draw (default: 0)")
    parser.add_argument("--workers", type=int, default=8, help="parallel image downloads")
    args = parser.parse_args(argv)

    for url in FILES.values():
        if fetch(url, args.out / url.rsplit("/", 1)[1]):
            print(f"downloaded {url}")
    points_csv = args.out / FILES["points"].rsplit("/", 1)[1]
    todo = plan_images(points_csv, count=args.images or None, seed=args.seed, folder=args.out / "images")
    print(f"{len(todo)} image(s) to download")
    failures = 0
    with ThreadPoolExecutor(args.workers) as pool:
        for (url, _), outcome in zip(todo, pool.map(lambda job: _try_fetch(*job), todo), strict=True):
            if outcome is not None:
                failures += 1
                print(f"failed {url}: {outcome}", file=sys.stderr)
    print(f"done; {failures} failure(s); run again to retry them")
    return 1 if failures else 0


def _try_fetch(url: str, target: Path) -> str | None:
    try:
        fetch(url, target)
    except OSError as error:
        return str(error)
    return None


if __name__ == "__main__":
    sys.exit(main())
