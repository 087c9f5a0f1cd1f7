"""Vocabularies with several prompts per class and background prompts: the three file formats, their
errors (by line), the max-over-prompts rule and the naming of masks, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from gem_sam.naming.mask_labels import label_masks
from gem_sam.naming.text import encode_vocabulary, template_set
from gem_sam.naming.vocabulary import (
    Vocabulary,
    class_similarity,
    parse_caption_ontology,
    parse_vocabulary,
    parse_yaml_vocabulary,
    read_vocabulary,
)

from ..conftest import TINY_CLIP_NAME

TEXT = """# a line without a colon is a class that is its own prompt
cup
person: person, man, woman, child
dog: dog , puppy

background: sky, wall
"""
EXPECTED = Vocabulary(
    classes=("cup", "person", "dog"),
    prompts=(("cup",), ("person", "man", "woman", "child"), ("dog", "puppy")),
    background=("sky", "wall"),
)
ONTOLOGY = {"cup": "cup", "person": "person", "man": "person", "woman": "person", "child": "person",
            "dog": "dog", "puppy": "dog", "sky": "background", "wall": "background"}  # fmt: skip
YAML = """classes:
  cup:
  person: [person, man, woman, child]
  dog: [dog, puppy]
background: [sky, wall]
"""


def test_the_three_formats_say_the_same() -> None:
    assert parse_vocabulary(TEXT) == EXPECTED
    assert parse_caption_ontology(json.dumps(ONTOLOGY, indent=2)) == EXPECTED
    assert parse_yaml_vocabulary(YAML) == EXPECTED
    assert EXPECTED.prompts_of("person") == ("person", "man", "woman", "child")
    assert EXPECTED.prompts_of("background") == ("sky", "wall")
    assert EXPECTED.all_prompts == ("cup", "person", "man", "woman", "child", "dog", "puppy", "sky", "wall")
    assert EXPECTED.prompt_class.tolist() == [0, 1, 1, 1, 1, 2, 2, 3, 3]
    with pytest.raises(KeyError, match="'cat' is not a class"):
        EXPECTED.prompts_of("cat")


def test_yaml_takes_names_with_commas_and_colons() -> None:
    vocabulary = parse_yaml_vocabulary('classes:\n  "cup, with handle": ["mug: white", cup]\n  "a:b": "ab"\n')
    assert vocabulary.classes == ("cup, with handle", "a:b")
    assert vocabulary.prompts == (("mug: white", "cup"), ("ab",)) and vocabulary.background == ()


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "the vocabulary is empty"),
        ("cup\ndog: dog, dog\n", "line 2: the prompt 'dog' of 'dog' is already a prompt of 'dog' (line 2)"),
        ("cup\n# note\nmug: cup, mug\n", "line 3: the prompt 'cup' of 'mug' is already a prompt of 'cup' (line 1)"),
        ("cup\nbackground: sky, cup\n", "line 2: the prompt 'cup' of 'background' is already a prompt of 'cup'"),
        ("cup\ndog:\n", "line 2: 'dog' has no prompt"),
        ("cup\ndog: dog,, puppy\n", "line 2: 'dog' has an empty prompt"),
        ("dog: dog\ncup\ndog: puppy\n", "line 3: class 'dog' is declared again (first on line 1)"),
        ("dog\ndog\n", "line 2: class 'dog' is declared again (first on line 1)"),
        ("# only this\nbackground: sky, wall\n", "line 2: 'background' is the only class"),
        ("cup\nbackground\n", "line 2: 'background' is reserved"),
        (": cup\n", "line 1: the class name is empty"),
    ],
)
def test_bad_text_vocabularies_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_vocabulary(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ('{\n  "cup": "cup",\n  "mug": "cup",\n  "cup": "mug"\n}', "line 4: the prompt 'cup' is given twice"),
        ('{\n  "cup": "cup",\n  "mug": 3\n}', "line 3: the prompt 'mug' maps to 3"),
        ('{\n  "sky": "background"\n}', "line 2: 'background' is the only class"),
        ('{\n  "cup": "cup",\n  "mug" "cup"\n}', "line 3: not valid JSON"),
        ('["cup"]', "line 1: a CaptionOntology is one JSON object"),
        ('{\n  "cup": ""\n}', "line 2: the prompt 'cup' maps to an empty class name"),
    ],
)
def test_bad_caption_ontologies_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_caption_ontology(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("classes:\n  cup:\n  dog: [dog]\n  cup: [mug]\n", "line 4: class 'cup' is declared again (first on line 2)"),
        ("classes:\n  cup: [cup]\n  dog: [cup]\n", "line 3: the prompt 'cup' of 'dog' is already a prompt of 'cup'"),
        ("classes:\n  cup: []\n", "line 2: 'cup' has no prompt"),
        ("classes:\n  cup: [a, {b: c}]\n", "line 2: prompts must be a list of strings"),
        ("classes: [cup]\n", "line 1: 'classes' must map"),
        ("background: [sky]\n", "line 1: 'classes' must map"),
        ("classes:\n  cup:\nbackround: [sky]\n", "line 3: unknown key 'backround'"),
        ("classes:\n  cup:\n  background: [sky]\n", "line 3: put background prompts under the top-level"),
        ("classes:\n  cup: [a\n", "not valid YAML"),
    ],
)
def test_bad_yaml_vocabularies_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_yaml_vocabulary(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "suffix,text", [(".txt", TEXT), (".json", json.dumps(ONTOLOGY)), (".yaml", YAML), (".yml", YAML)]
)
def test_read_vocabulary_by_extension(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"vocab{suffix}"
    path.write_text(text, encoding="utf-8")
    assert read_vocabulary(path) == EXPECTED
    path.write_text("cup\ncup\n" if suffix == ".txt" else "{", encoding="utf-8")
    with pytest.raises(ValueError, match=f"vocab{suffix}.*line"):
        read_vocabulary(path)


@pytest.mark.parametrize(
    "pooled,prompt_class,groups,expected",
    [
        ([[0.1, 0.3, 0.2]], [0, 0, 1], 2, [[0.3, 0.2]]),
        ([[0.1, -0.3, 0.2], [0.5, 0.4, -1.0]], [1, 0, 1], 2, [[-0.3, 0.2], [0.4, 0.5]]),
        ([[0.1, 0.2]], [0, 0], 2, [[0.2, float("-inf")]]),  # a group without prompts
        ([[-0.5]], [0], 1, [[-0.5]]),  # negative similarities stay (the initial value is -inf)
    ],
)
def test_class_similarity_is_the_max_over_prompts(pooled, prompt_class, groups, expected) -> None:
    out = class_similarity(torch.tensor(pooled, dtype=torch.float64), torch.tensor(prompt_class), groups)
    assert out.tolist() == expected


def test_label_masks_with_prompts_and_background_by_hand() -> None:
    vocabulary = Vocabulary(classes=("person", "dog"), prompts=(("person", "man"), ("dog",)), background=("sky",))
    pooled = torch.tensor(
        [
            [0.20, 0.25, 0.21, 0.10],  # person via "man" (0.25) beats dog 0.21 and sky 0.10
            [0.20, 0.10, 0.22, 0.30],  # sky wins: background, not kept
            [0.10, 0.12, 0.30, 0.29],  # dog
        ]
    )
    labels = label_masks(pooled, logit_scale=100.0, vocabulary=vocabulary, min_score=0.0)
    assert labels.class_index.tolist() == [0, 2, 1]
    assert labels.prompt_index.tolist() == [1, 3, 2]
    assert labels.background.tolist() == [False, True, False]
    assert labels.keep.tolist() == [True, False, True]
    # score: softmax over (person, dog, background) of 100 x class similarity
    first = torch.tensor([25.0, 21.0, 10.0]).softmax(dim=0)[0]
    assert labels.score[0].item() == pytest.approx(first.item(), abs=1e-6)
    assert labels.similarity.tolist() == pytest.approx([0.25, 0.30, 0.30])


def test_a_flat_vocabulary_names_exactly_as_a_list_of_names() -> None:
    torch.manual_seed(0)
    pooled = torch.randn(50, 7) * 0.1
    flat = Vocabulary.from_names([f"c{i}" for i in range(7)])
    grouped, plain = label_masks(pooled, logit_scale=100.0, vocabulary=flat), label_masks(pooled, logit_scale=100.0)
    for field in ("class_index", "score", "similarity", "keep"):
        assert torch.equal(getattr(grouped, field), getattr(plain, field)), field


def test_imagenet_template_ensemble_is_clips_recipe(tiny_clip_checkpoint: Path) -> None:
    """Each prompt's embedding is the normalised mean of its 80 normalised template embeddings,
    computed here by hand with open_clip's own tokenizer and text tower."""
    templates = template_set("imagenet")
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}." and all("{}" in t for t in templates)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=str(tiny_clip_checkpoint)).eval()
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    ours = encode_vocabulary(
        ["red car", "dog"], encode_tokens=model.encode_text, tokenizer=tokenizer, templates=templates
    )
    with torch.no_grad():
        by_hand = []
        for prompt in ["red car", "dog"]:
            embeddings = F.normalize(model.encode_text(tokenizer([t.format(prompt) for t in templates])), dim=-1)
            by_hand.append(F.normalize(embeddings.mean(dim=0), dim=0))
    torch.testing.assert_close(ours, torch.stack(by_hand), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours[0], ours[1], atol=1e-3)
