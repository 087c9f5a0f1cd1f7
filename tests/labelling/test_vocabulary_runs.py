"""Labelling runs with several prompts per class and background prompts, on object-like masks of real
photos and a CLIP whose features vary across the image, so that classes and background all win masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gem_sam import AutoLabeller, LabelConfig, QualityControls, build_gem_scorer, label_folder, read_vocabulary
from gem_sam.images import load_image

from ..conftest import TINY_CLIP_NAME, small_photo
from ..region_masks import RegionMaskGenerator

FLAT_PROMPTS = ["person", "man", "woman", "dog", "puppy", "cup", "sky", "wall"]
PROMPT_CLASS = {"person": "person", "man": "person", "woman": "person", "dog": "dog", "puppy": "dog", "cup": "cup"}
TEXT = "person: person, man, woman\ndog: dog, puppy\ncup\nbackground: sky, wall\n"
ONTOLOGY = {**PROMPT_CLASS, "sky": "background", "wall": "background"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        small_photo(name).convert("RGB").save(folder / name.replace(".png", ".jpg"))
    return folder


def labelled(vocabulary, photos: Path, out: Path, clip_checkpoint: Path) -> dict:
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(clip_checkpoint), device="cpu")
    labeller = AutoLabeller(scorer=scorer, mask_generator=RegionMaskGenerator(), vocabulary=vocabulary)
    summary = label_folder(labeller, images_dir=photos, out_path=out, settings={"run": out.stem}, progress=False)
    assert summary.labelled == 3
    return json.loads(out.read_text())


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_grouped_prompts_equal_flat_prompts_mapped_by_hand(
    photos: Path, tmp_path: Path, varied_clip_checkpoint: Path, fmt: str
) -> None:
    vocab_file = tmp_path / f"vocab.{fmt}"
    vocab_file.write_text(TEXT if fmt == "txt" else json.dumps(ONTOLOGY))
    flat = labelled(FLAT_PROMPTS, photos, tmp_path / "flat.json", varied_clip_checkpoint)
    grouped = labelled(read_vocabulary(vocab_file), photos, tmp_path / "grouped.json", varied_clip_checkpoint)

    flat_names = {c["id"]: c["name"] for c in flat["categories"]}
    expected = [
        (a["image_id"], PROMPT_CLASS[flat_names[a["category_id"]]], a["segmentation"]["counts"])
        for a in flat["annotations"]
        if flat_names[a["category_id"]] in PROMPT_CLASS
    ]
    names = {c["id"]: c["name"] for c in grouped["categories"]}
    found = [(a["image_id"], names[a["category_id"]], a["segmentation"]["counts"]) for a in grouped["annotations"]]
    assert found == expected
    # not degenerate: all three classes and both background prompts win masks
    assert {name for _, name, _ in found} == {"person", "dog", "cup"}
    won = {p: sum(flat_names[a["category_id"]] == p for a in flat["annotations"]) for p in ("sky", "wall")}
    assert min(won.values()) > 0 and grouped["info"]["dropped_as_background"] == won
    report = json.loads(Path(f"{tmp_path / 'grouped.json'}.report.json").read_text())
    assert report["dropped_as_background"] == {"masks": sum(won.values()), "by_prompt": won}
    # the class similarity is its best prompt's; the score a softmax over classes and background
    assert all(0.0 < a["score"] <= 1.0 for a in grouped["annotations"])


def test_quality_controls_apply_after_background_removal(
    photos: Path, tmp_path: Path, varied_clip_checkpoint: Path
) -> None:
    """--max-masks-per-image keeps the best of the masks that are written, not of all named masks."""
    vocabulary = read_vocabulary(_write(tmp_path / "v.txt", TEXT))
    scorer = build_gem_scorer(model_name=TINY_CLIP_NAME, pretrained=str(varied_clip_checkpoint), device="cpu")
    generator = RegionMaskGenerator()
    plain = AutoLabeller(scorer=scorer, mask_generator=generator, vocabulary=vocabulary)
    capped = AutoLabeller(
        scorer=scorer,
        mask_generator=generator,
        vocabulary=vocabulary,
        config=LabelConfig(quality=QualityControls(max_masks_per_image=2)),
    )
    for path in sorted(photos.iterdir()):
        image = load_image(path)
        written = plain.label(image)
        best = sorted(sorted(range(len(written)), key=lambda i: -written[i]["score"])[:2])  # ties: the earlier
        assert capped.label(image) == [written[i] for i in best]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
