"""Runs that are interrupted, big, odd or distributed: nothing finished is lost, nothing crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator

from gem_sam.images import load_image
from gem_sam.labelling.pipeline import label_folder
from gem_sam.labelling.spec import LabellerSpec
from gem_sam.sam import MaskGeneratorConfig

from ..conftest import (
    LOOSE_SETTINGS,
    TINY_CLIP_NAME,
    TINY_SAM,
    TINY_SAM_NAME,
    assert_reference_parity,
    small_photo,
    tiny_sam,
)

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg", "motorcycle_left.png"]


def _spec(tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path, vocabulary=("cat", "person", "rocket"), **kw):
    return LabellerSpec(
        vocabulary=tuple(vocabulary),
        clip_model=TINY_CLIP_NAME,
        pretrained=str(tiny_clip_checkpoint),
        sam_model=TINY_SAM_NAME,
        sam_checkpoint=str(tiny_sam_checkpoint),
        generator=MaskGeneratorConfig(points_per_side=2, **LOOSE_SETTINGS),
        device="cpu",
        clip_config_paths=(str(tiny_clip_checkpoint.parent / "configs"),),
        sam_architectures={TINY_SAM_NAME: TINY_SAM},
        **kw,
    )


def _cli_args(images: Path, vocab: Path, out: Path, clip: Path, sam: Path) -> list[str]:
    return [
        "--images", str(images), "--vocab", str(vocab), "--out", str(out), "--quiet", "--device", "cpu",
        "--clip-model", TINY_CLIP_NAME, "--pretrained", str(clip), "--sam-model", TINY_SAM_NAME,
        "--sam-checkpoint", str(sam), "--points-per-side", "2", "--pred-iou-thresh", "0",
        "--stability-score-thresh", "0.3", "--box-nms-thresh", "1.0",
    ]  # fmt: skip


@pytest.fixture
def many_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(12):
        small_photo(PHOTOS[index % len(PHOTOS)], long_side=64 + 8 * index).convert("RGB").save(
            folder / f"photo_{index:02d}.jpg"
        )
    return folder


def test_sigkill_mid_run_then_rerun_gives_the_same_file(
    many_photos: Path, vocab_file: Path, tmp_path: Path, tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path
) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from tests.conftest import register_tiny_models\n"
        f"register_tiny_models(Path({str(tmp_path / 'configs')!r}))\n"
        "from gem_sam.label import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    reference = tmp_path / "uninterrupted.json"
    args = _cli_args(many_photos, vocab_file, reference, tiny_clip_checkpoint, tiny_sam_checkpoint)
    subprocess.run([sys.executable, str(driver), *args], check=True, capture_output=True)

    out = tmp_path / "interrupted.json"
    args = _cli_args(many_photos, vocab_file, out, tiny_clip_checkpoint, tiny_sam_checkpoint)
    records = Path(f"{out}.records")
    process = subprocess.Popen([sys.executable, str(driver), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(records.glob("img-*.json"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(records.glob("img-*.json")))
    assert 3 <= finished < 12, "the kill must land mid-run"
    assert not out.exists()

    result = subprocess.run([sys.executable, str(driver), *args], capture_output=True, text=True, check=True)
    assert f"images labelled: {12 - finished} (plus {finished} from an earlier run)" in result.stdout
    annotations = json.loads(reference.read_text())["annotations"]
    assert len({a["image_id"] for a in annotations}) >= 10  # masks on most of the 12 images, not an empty file
    assert json.loads(out.read_text())["annotations"] == annotations
    assert json.loads(out.read_text())["images"] == json.loads(reference.read_text())["images"]


def test_odd_files_are_labelled_or_skipped_with_a_reason(
    tmp_path: Path, tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path
) -> None:
    folder = tmp_path / "odd"
    (folder / "déjà vu" / "sub dir").mkdir(parents=True)
    photo = small_photo("astronaut.png", long_side=90).convert("RGB")
    photo.save(folder / "déjà vu" / "sub dir" / "photo with spaces é.jpg")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.arange(50 * 40, dtype=np.uint16).reshape(40, 50) * 30).save(folder / "deep16.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    photo.save(folder / "rotated.jpg", exif=exif)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello")
    data = (folder / "rotated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 4])
    os.symlink(folder, folder / "déjà vu" / "loop")

    labeller = _spec(tiny_clip_checkpoint, tiny_sam_checkpoint).build()
    out = tmp_path / "out.json"
    summary = label_folder(labeller, images_dir=folder, out_path=out, settings={"test": 1}, progress=False)
    skipped = dict(summary.skipped)
    assert sorted(skipped) == ["empty.jpg", "text.jpg", "truncated.jpg"]
    assert "empty" in skipped["empty.jpg"] and "not a readable image" in skipped["text.jpg"]
    names = [image["file_name"] for image in json.loads(out.read_text())["images"]]
    assert names == [
        "cmyk.jpg",
        "deep16.png",
        "déjà vu/sub dir/photo with spaces é.jpg",
        "one_pixel.png",
        "rotated.jpg",
    ]
    sizes = {image["file_name"]: (image["width"], image["height"]) for image in json.loads(out.read_text())["images"]}
    assert sizes["rotated.jpg"] == (photo.height, photo.width)  # EXIF rotation applied
    assert sizes["one_pixel.png"] == (1, 1)
    assert [entry["file_name"] for entry in json.loads(Path(f"{out}.skipped.json").read_text())] == sorted(skipped)


def test_non_ascii_and_large_vocabulary(tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path) -> None:
    vocabulary = ["chat", "猫", "Éléphant", "пёс"] + [f"class number {i}" for i in range(1996)]
    labeller = _spec(tiny_clip_checkpoint, tiny_sam_checkpoint, vocabulary=vocabulary).build()
    assert labeller.text.shape[0] == 2000
    annotations = labeller.label(np.asarray(small_photo("coffee.png", long_side=80).convert("RGB")))
    assert annotations and all(0 <= a["class_index"] < 2000 for a in annotations)


LARGE_IMAGE_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.conftest import register_tiny_models
register_tiny_models(Path(sys.argv[2]))
from gem_sam.images import load_image
from gem_sam.labelling.spec import LabellerSpec
from gem_sam.sam import MaskGeneratorConfig
from tests.conftest import LOOSE_SETTINGS, TINY_CLIP_NAME, TINY_SAM, TINY_SAM_NAME

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 2**20

spec = LabellerSpec(vocabulary=("cat", "person", "rocket"), clip_model=TINY_CLIP_NAME, pretrained=sys.argv[3],
                    sam_model=TINY_SAM_NAME, sam_checkpoint=sys.argv[4], device="cpu",
                    generator=MaskGeneratorConfig(points_per_side=2, **LOOSE_SETTINGS))
labeller = spec.build()
image = load_image(sys.argv[5])
open("/proc/self/clear_refs", "w").write("5")  # the peak from here on is the labelling's
before = status("VmRSS:")
annotations = labeller.label(image)
print(json.dumps({"growth_gib": status("VmHWM:") - before, "masks": len(annotations),
                  "sizes": sorted({tuple(a["segmentation"]["size"]) for a in annotations})}))
"""


@pytest.mark.slow
def test_very_large_image(tmp_path: Path, tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path) -> None:
    """12000 x 8000 pixels, labelled in a fresh process whose peak memory is reset after the models and
    the image are loaded, so the peak is the labelling's own. Full-resolution work runs one mask at a
    time here (a float32 mask of this image is 0.36 GiB): measured 1.07 GiB, a mask's logits and their
    thresholded copies. Upsampling the 12 candidate masks of the 4 prompts at once, as an unchunked
    generator does, would take 4.3 GiB for their logits alone."""
    big = small_photo("coffee.png", long_side=600).convert("RGB").resize((12000, 8000), Image.NEAREST)
    big.save(tmp_path / "big.png", compress_level=1)
    register = tmp_path / "configs"
    result = subprocess.run(
        [sys.executable, "-c", LARGE_IMAGE_SCRIPT, str(REPO), str(register), str(tiny_clip_checkpoint),
         str(tiny_sam_checkpoint), str(tmp_path / "big.png")],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["masks"] > 0 and measured["sizes"] == [[8000, 12000]]
    assert 0.05 < measured["growth_gib"] < 2.0, measured


@pytest.mark.parity
def test_ray_engine_matches_single_process(
    many_photos: Path, tmp_path: Path, tiny_clip_checkpoint: Path, tiny_sam_checkpoint: Path
) -> None:
    pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install gem_sam[ray]")
    from gem_sam.labelling.ray_engine import label_folder_ray

    spec = _spec(tiny_clip_checkpoint, tiny_sam_checkpoint)
    single = tmp_path / "single.json"
    label_folder(spec.build(), images_dir=many_photos, out_path=single, settings=spec.settings(), progress=False)

    out = tmp_path / "ray.json"
    photos = sorted(many_photos.iterdir())
    growing = tmp_path / "growing"
    growing.mkdir()
    for path in photos[:4]:  # a first run over part of the folder, as if interrupted
        (growing / path.name).write_bytes(path.read_bytes())
    label_folder(spec.build(), images_dir=growing, out_path=out, settings=spec.settings(), progress=False)
    for path in photos[4:]:
        (growing / path.name).write_bytes(path.read_bytes())
    summary = label_folder_ray(spec, images_dir=growing, out_path=out, workers=2, progress=False)
    assert (summary.labelled, summary.resumed) == (8, 4)
    ray_coco, single_coco = json.loads(out.read_text()), json.loads(single.read_text())
    reference = SamAutomaticMaskGenerator(tiny_sam(), output_mode="coco_rle", **spec.generator.reference_kwargs())
    assert_same_annotations(ray_coco, single_coco, reference, images_dir=many_photos)


def assert_same_annotations(ours: dict, single: dict, reference_generator, *, images_dir: Path) -> None:
    """Ray's annotations and the single-process run's: the same classes, scores within float rounding
    (Ray's workers run with another thread count, which changes the order of float sums), and each run's
    masks in parity with the reference generator's on every image (``gem_sam.sam.parity``)."""
    assert [a["image_id"] for a in ours["annotations"]] == [a["image_id"] for a in single["annotations"]]
    assert [a["category_id"] for a in ours["annotations"]] == [a["category_id"] for a in single["annotations"]]
    np.testing.assert_allclose(
        [a["score"] for a in ours["annotations"]], [a["score"] for a in single["annotations"]], atol=1e-4
    )
    assert ours["images"] == single["images"]
    compared = 0
    for image in single["images"]:
        pixels = load_image(images_dir / image["file_name"])
        for run in (ours, single):
            annotations = [a for a in run["annotations"] if a["image_id"] == image["id"]]
            report = assert_reference_parity(annotations, reference_generator, pixels, allow_empty=True)
            compared += report.matched
    assert compared >= 10
