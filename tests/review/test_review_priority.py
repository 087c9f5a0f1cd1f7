"""Review that starts where the labels are least sure: each mask's margin and entropy, each image's review
priority, and where they go (COCO, the run report, Label Studio tasks), checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gem_sam import AutoLabeller, build_gem_scorer, label_folder
from gem_sam.images import load_image
from gem_sam.mask_ops import decode_rle
from gem_sam.naming import label_masks, margin_and_entropy, review_priority
from gem_sam.naming.vocabulary import Vocabulary

from ..conftest import TINY_CLIP_NAME, small_photo
from ..export.test_layout import export
from ..region_masks import RegionMaskGenerator

VOCABULARY = Vocabulary(
    classes=("person", "dog", "cup"), prompts=(("person", "man"), ("dog",), ("cup",)), background=("sky", "wall")
)


@pytest.mark.parametrize(
    "probabilities,margin,entropy",
    [
        ([1.0, 0.0, 0.0], 1.0, 0.0),
        ([0.5, 0.5, 0.0], 0.0, math.log(2)),
        ([0.7, 0.2, 0.1], 0.5, -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))),
        ([0.25, 0.25, 0.25, 0.25], 0.0, math.log(4)),
        ([1.0], 1.0, 0.0),  # one class, no background: nothing to confuse it with
    ],
)
def test_margin_and_entropy_by_hand(probabilities: list[float], margin: float, entropy: float) -> None:
    got_margin, got_entropy = margin_and_entropy(torch.tensor([probabilities]))
    assert float(got_margin[0]) == pytest.approx(margin, abs=1e-6)
    assert float(got_entropy[0]) == pytest.approx(entropy, abs=1e-6)


@pytest.mark.parametrize(
    "margins,areas,expected",
    [
        ([], [], 0.0),  # no masks: nothing to review
        ([1.0, 1.0], [50, 10], 0.0),  # every name sure
        ([0.4, 0.4, 0.4], [5, 50, 500], 0.6),  # equally unsure masks: their uncertainty
        ([0.0] + [1.0] * 9, [10] + [1000] * 9, 1.0),  # one tie among many sure masks is not diluted
        ([0.8, 0.1], [100, 10], (100 * 0.04 + 10 * 0.81) / (100 * 0.2 + 10 * 0.9)),  # 12.1 / 29
    ],
)
def test_review_priority_by_hand(margins: list[float], areas: list[float], expected: float) -> None:
    assert review_priority(margins, areas) == pytest.approx(expected, abs=1e-12)


def test_a_large_unsure_mask_outweighs_an_unsure_speck() -> None:
    sure = [1.0] * 5
    large = review_priority([0.2, *sure], [5000, *[100] * 5])
    speck = review_priority([0.2, 0.9], [20, 5000])
    assert large > speck


def test_label_masks_gives_each_masks_margin_and_entropy() -> None:
    """Background counts as a class: its probability is in the distribution."""
    pooled = torch.tensor([[0.30, 0.10, 0.299, 0.0, 0.05, 0.02], [0.30, 0.0, 0.10, 0.0, 0.05, 0.02]])
    labels = label_masks(pooled, logit_scale=100.0, vocabulary=VOCABULARY)
    # classes person (max of person, man), dog, cup, and background (max of sky, wall)
    grouped = torch.tensor([[0.30, 0.299, 0.0, 0.05], [0.30, 0.10, 0.0, 0.05]])
    probabilities = (100 * grouped).softmax(dim=1)
    top = probabilities.topk(2, dim=1).values
    torch.testing.assert_close(labels.margin, top[:, 0] - top[:, 1])
    torch.testing.assert_close(labels.entropy, -(probabilities * probabilities.log()).sum(dim=1))
    assert float(labels.margin[0]) < 0.1 < 0.9 < float(labels.margin[1])  # a near tie and a clear name


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, varied_clip_checkpoint: Path) -> Path:
    """Object-like masks of six real photos named by a CLIP whose similarities vary across the image."""
    folder = tmp_path_factory.mktemp("priority")
    photos = folder / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "camera.png"):
        small_photo(name, long_side=128).convert("RGB").save(photos / f"{Path(name).stem}.jpg")
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(varied_clip_checkpoint), device="cpu")
    labeller = AutoLabeller(scorer=scorer, mask_generator=RegionMaskGenerator(), vocabulary=VOCABULARY)
    out = folder / "annotations.json"
    label_folder(labeller, images_dir=photos, out_path=out, settings={"run": "priority"}, progress=False)
    return out


def hand_margins(run: Path, varied_clip_checkpoint: Path) -> dict[int, list[tuple[float, float]]]:
    """Per image id, (margin, area) of each annotation computed by hand: GEM's similarity upsampled to the
    image, its mean inside the mask per prompt, the best prompt per class, a softmax of 100x those."""
    data = json.loads(run.read_text())
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(varied_clip_checkpoint), device="cpu")
    text = scorer.encode_text(VOCABULARY.all_prompts)
    out: dict[int, list[tuple[float, float]]] = {}
    for image in data["images"]:
        pixels = load_image(Path(data["info"]["images_dir"]) / image["file_name"])
        with torch.no_grad():
            similarity = scorer.patch_similarity(scorer.preprocess(pixels), text)  # [1, P, h, w]
        upsampled = F.interpolate(similarity, size=pixels.shape[:2], mode="bilinear", align_corners=False)[0]
        for annotation in (a for a in data["annotations"] if a["image_id"] == image["id"]):
            mask = torch.from_numpy(decode_rle(annotation["segmentation"]))
            pooled = upsampled[:, mask].mean(dim=1)  # [P]
            grouped = torch.stack([pooled[0:2].max(), pooled[2], pooled[3], pooled[4:6].max()])
            top = (scorer.logit_scale * grouped).softmax(dim=0).topk(2).values
            out.setdefault(image["id"], []).append((float(top[0] - top[1]), annotation["area"]))
    return out


def test_annotations_carry_margin_and_entropy_and_least_sure_images_come_first(
    run: Path, varied_clip_checkpoint: Path, tmp_path: Path
) -> None:
    data = json.loads(run.read_text())
    margins = hand_margins(run, varied_clip_checkpoint)
    ours = {image["id"]: [] for image in data["images"]}
    for annotation in data["annotations"]:
        ours[annotation["image_id"]].append(annotation["margin"])
        assert 0.0 <= annotation["entropy"] <= math.log(4) + 1e-6
    for image_id, pairs in margins.items():
        assert ours[image_id] == pytest.approx([margin for margin, _ in pairs], abs=1e-4)
    all_margins = [margin for pairs in margins.values() for margin, _ in pairs]
    assert min(all_margins) < 0.02 and max(all_margins) > 0.1  # near ties and clearer names, not all alike

    # Label Studio tasks: score = 1 - priority, the N least sure images first with --review-first
    priority = {i: review_priority([m for m, _ in pairs], [a for _, a in pairs]) for i, pairs in margins.items()}
    assert export(str(run), "--to", "label-studio", "--out", str(tmp_path / "all"))[0] == 0
    code, _, _ = export(str(run), "--to", "label-studio", "--out", str(tmp_path / "first"), "--review-first", "3")
    assert code == 0
    names = {image["id"]: image["file_name"] for image in data["images"]}
    expected = sorted(priority, key=lambda image_id: -priority[image_id])[:3]
    first = json.loads((tmp_path / "first" / "tasks.json").read_text())
    assert [task["data"]["gem_sam_file_name"] for task in first] == [names[i] for i in expected]
    everything = json.loads((tmp_path / "all" / "tasks.json").read_text())
    for task in everything:
        image_id = next(i for i, name in names.items() if name == task["data"]["gem_sam_file_name"])
        assert task["predictions"][0]["score"] == pytest.approx(1.0 - priority[image_id], abs=1e-4)
    scores = sorted(task["predictions"][0]["score"] for task in everything)
    assert scores[0] < scores[-1]  # the images differ

    report = json.loads(Path(f"{run}.report.json").read_text())
    assert sum(report["margin_histogram"]) == len(data["annotations"])
    assert [entry["file_name"] for entry in report["review_first"]][:3] == [names[i] for i in expected]


def test_review_first_is_refused_where_it_does_not_apply(run: Path, tmp_path: Path, capsys) -> None:
    from gem_sam.cli.export import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--to", "yolo-seg", "--out", str(tmp_path / "y"), "--review-first", "2"])
    assert exit_info.value.code == 2 and "--review-first applies to --to label-studio" in capsys.readouterr().err
    code, _, err = export(str(run), "--to", "label-studio", "--out", str(tmp_path / "l"), "--review-first", "0")
    assert code == 2 and "--review-first 0 must be at least 1" in err and not (tmp_path / "l").exists()
