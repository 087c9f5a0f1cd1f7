"""Download the dense benchmarks and lay them out as ``gem_sam.evaluate_dense`` reads them.

    python scripts/download_dense_datasets.py --dataset voc --out data/     # 2.0 GB
    python scripts/download_dense_datasets.py --dataset ade20k --out data/  # 0.9 GB
    python scripts/download_dense_datasets.py --dataset context --out data/ # 1.3 GB, then a conversion

Archives are downloaded under a temporary name and renamed when complete (an interrupted run is
resumed by running it again), then unpacked. ``--root`` for the evaluation is printed at the end.

Pascal Context's 59-class label maps are not published as images: they are made from the VOC 2010
images and ``trainval_merged.json`` with the Detail API. This script downloads both and prints the
conversion command of mmsegmentation's converter, which writes the ``SegmentationClassContext/`` and
``ImageSets/SegmentationContext/`` folders that the reader expects.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from download_openimages_points import fetch  # noqa: E402

DOWNLOADS = {
    "voc": ["http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"],
    "ade20k": ["http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"],
    "context": [
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
        "https://codalabuser.blob.core.windows.net/public/trainval_merged.json",
    ],
}
ROOTS = {
    "voc": "VOCdevkit/VOC2012",
    "ade20k": "ADEChallengeData2016",
    "context": "VOCdevkit/VOC2010",
}
CONTEXT_CONVERSION = (
    "pip install 'git+https://github.com/zhanghang1989/detail-api.git#subdirectory=PythonAPI', then run "
    "mmsegmentation's tools/dataset_converters/pascal_context.py {root} {json}"
)


def plan(dataset: str, out: Path) -> list[tuple[str, Path]]:
    """(url, target file) of every download of ``dataset``."""
    if dataset not in DOWNLOADS:
        raise ValueError(f"dataset {dataset!r} is not one of {', '.join(DOWNLOADS)}")
    return [(url, out / "downloads" / url.rsplit("/", 1)[-1]) for url in DOWNLOADS[dataset]]


def unpack(archive: Path, out: Path) -> None:
    """Unpack a .tar or .zip archive into ``out`` (members may not leave it)."""
    if archive.suffix == ".tar":
        with tarfile.open(archive) as tar:
            tar.extractall(out, filter="data")
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise ValueError(f"{archive} holds an unsafe path {member!r}")
            zipped.extractall(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DOWNLOADS))
    parser.add_argument("--out", required=True, type=Path, help="folder for the downloads and the dataset")
    parser.add_argument("--dry-run", action="store_true", help="print what would be downloaded, do nothing")
    args = parser.parse_args(argv)
    downloads = plan(args.dataset, args.out)
    root = args.out / ROOTS[args.dataset]
    for url, target in downloads:
        print(f"{url} -> {target}")
    if args.dry_run:
        print(f"--root {root}")
        return 0
    for url, target in downloads:
        fetch(url, target)
        if target.suffix in (".tar", ".zip"):
            unpack(target, args.out)
    if args.dataset == "context":
        print("now make the 59-class label maps:")
        print(CONTEXT_CONVERSION.format(root=args.out / "VOCdevkit", json=downloads[1][1]))
    print(f"evaluate with: python -m gem_sam.evaluate_dense --dataset {args.dataset} --root {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
