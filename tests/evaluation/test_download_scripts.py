"""The parts of the OpenImages download script that run without a network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "download_openimages_points.py"
spec = importlib.util.spec_from_file_location("download_openimages_points", SCRIPT)
download = importlib.util.module_from_spec(spec)
spec.loader.exec_module(download)


def test_plan_skips_images_on_disk(tmp_path: Path) -> None:
    points = tmp_path / "points.csv"
    rows = ["ImageId,X,Y,Label,EstimatedYesNo"] + [f"id{i},0.5,0.5,/m/cat,yes" for i in range(5)]
    points.write_text("\n".join(rows) + "\n")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "id3.jpg").write_bytes(b"done")
    plan = download.plan_images(points, count=None, seed=0, folder=folder)
    assert [target.name for _, target in plan] == ["id0.jpg", "id1.jpg", "id2.jpg", "id4.jpg"]
    assert plan[0][0] == "https://open-images-dataset.s3.amazonaws.com/validation/id0.jpg"
    assert len(download.plan_images(points, count=2, seed=0, folder=folder)) <= 2


def test_fetch_is_atomic_and_resumable(tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    source.write_text("LabelName,DisplayName\n")
    target = tmp_path / "out" / "classes.csv"
    assert download.fetch(source.as_uri(), target) is True
    assert target.read_text() == source.read_text()
    assert download.fetch(source.as_uri(), target) is False  # already there: skipped
    assert sorted(p.name for p in target.parent.iterdir()) == ["classes.csv"]
    missing = tmp_path / "nothing.csv"
    assert download._try_fetch(missing.as_uri(), tmp_path / "out" / "x.csv") is not None
    assert not (tmp_path / "out" / "x.csv").exists()


DENSE_SCRIPT = Path(__file__).parents[2] / "scripts" / "download_dense_datasets.py"


def _load_dense_script():
    import sys

    sys.path.insert(0, str(DENSE_SCRIPT.parent))
    dense_spec = importlib.util.spec_from_file_location("download_dense_datasets", DENSE_SCRIPT)
    module = importlib.util.module_from_spec(dense_spec)
    dense_spec.loader.exec_module(module)
    return module


def test_dense_download_plan_and_unpacking(tmp_path: Path) -> None:
    import tarfile

    dense = _load_dense_script()
    ((url, target),) = dense.plan("voc", tmp_path)
    assert (
        url.endswith("VOCtrainval_11-May-2012.tar") and target == tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar"
    )
    assert len(dense.plan("context", tmp_path)) == 2
    source = tmp_path / "src" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    source.mkdir(parents=True)
    (source / "val.txt").write_text("2007_000033\n")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "VOCdevkit", arcname="VOCdevkit")
    dense.unpack(archive, tmp_path / "out")
    assert (
        tmp_path / "out" / dense.ROOTS["voc"] / "ImageSets" / "Segmentation" / "val.txt"
    ).read_text() == "2007_000033\n"
