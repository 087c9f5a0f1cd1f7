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
    VocabularyWarning,
    class_similarity,
    parse_caption_ontology,
    parse_vocabulary,
    parse_yaml_vocabulary,
    prompt_key,
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


# --- prompts CLIP cannot tell apart, the reserved name, keys, comments ------------------------------


@pytest.mark.parametrize(
    "text,message",
    [
        ("cup: Cup\nmug: cup\n", "line 2: the prompt 'cup' of 'mug' is already a prompt of 'cup' 'Cup', which CLIP"),
        ("coffee cup\ncoffee  cup\n", "line 2: class 'coffee  cup' is declared again (first on line 1 as"),
        ("mug: coffee cup\ncup: coffee\tcup\n", "line 2: the prompt 'coffee\\tcup' of 'cup' is already a prompt"),
        ("caf\u00e9\ncafe\u0301\n", "line 2: class 'cafe\u0301' is declared again (first on line 1 as 'caf\u00e9')"),
        ("mug: caf\u00e9\ncup: CAFE\u0301\n", "line 2: the prompt 'CAFE\u0301' of 'cup' is already a prompt of 'mug'"),
        ("cup\nBackground\n", "line 2: 'background' is reserved"),
    ],
    ids=["case", "spaces", "tab", "nfc-nfd-class", "nfd-and-case-prompt", "background-alone"],
)
def test_prompts_clip_reads_the_same_are_one_prompt(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_vocabulary(text)
    assert message in str(caught.value)


def test_prompt_key_is_what_clips_tokenizer_tells_apart() -> None:
    """Texts with one key get one token sequence from open_clip's own tokenizer; the others do not."""
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    same = [("Cup", "cup"), ("coffee  cup", "coffee cup"), ("caf\u00e9", "cafe\u0301"), ("a\tb", "a b")]
    for a, b in same:
        assert prompt_key(a) == prompt_key(b)
        assert torch.equal(tokenizer([a]), tokenizer([b])), (a, b)
    assert prompt_key("cup") != prompt_key("cups") and not torch.equal(tokenizer(["cup"]), tokenizer(["cups"]))


@pytest.mark.parametrize(
    "parse,text",
    [
        (parse_vocabulary, "cup\nBackground: sky, wall\n"),
        (parse_vocabulary, "cup\nBACKGROUND: sky, wall\n"),
        (parse_caption_ontology, '{"cup": "cup", "sky": "Background", "wall": "background"}'),
        (parse_yaml_vocabulary, "classes:\n  cup:\nBackground: [sky, wall]\n"),
    ],
)
def test_background_is_reserved_in_every_case(parse, text: str) -> None:
    vocabulary = parse(text)
    assert vocabulary.classes == ("cup",) and vocabulary.background == ("sky", "wall")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Vocabulary(classes=("cup", "Background"), prompts=(("cup",), ("sky",))),
        lambda: Vocabulary.from_names(["cup", "BackGround"]),
        lambda: Vocabulary(classes=("mug", "cup"), prompts=(("Cup",), ("cup",))),
    ],
)
def test_the_api_refuses_what_the_files_refuse(make) -> None:
    with pytest.raises(ValueError, match="reserved|to CLIP"):
        make()


@pytest.mark.parametrize(
    "text,message",
    [
        ("classes:\n  ? [a, b]\n  : [x]\n", "line 2: a key is a list; keys must be plain names"),
        ("classes:\n  ? {a: b}\n  : [x]\n", "line 2: a key is a mapping"),
        ("? [classes]\n: {cup: }\n", "line 1: a key is a list"),
        ("classes:\n  Background: [sky]\n", "line 2: put background prompts under the top-level"),
    ],
)
def test_yaml_keys_that_are_not_names_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_yaml_vocabulary(text)
    assert message in str(caught.value)


def test_trailing_comments_are_comments_with_a_warning() -> None:
    with pytest.warns(VocabularyWarning) as caught:
        vocabulary = parse_vocabulary("cup    # a class that is its own prompt\ndog: dog, puppy #two\nsize#2\n")
    assert vocabulary.classes == ("cup", "dog", "size#2") and vocabulary.prompts_of("dog") == ("dog", "puppy")
    assert [str(w.message) for w in caught] == [
        "line 1: '# a class that is its own prompt' is read as a comment; a '#' inside a prompt needs the YAML format",
        "line 2: '#two' is read as a comment; a '#' inside a prompt needs the YAML format",
    ]


def test_the_docstring_examples_read_as_they_say() -> None:
    """The module docstring's text and YAML examples, copied as a user would."""
    import textwrap
    import warnings

    import gem_sam.naming.vocabulary as module

    doc = module.__doc__
    text_example = textwrap.dedent(doc.split("ignored::\n")[1].split("\n\n  Text after")[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vocabulary = parse_vocabulary(text_example)
    assert vocabulary.classes == ("cup", "person") and vocabulary.background == ("sky", "wall", "floor")
    yaml_example = textwrap.dedent(doc.split("commas or colons::\n")[1].split("\n\nA class")[0])
    assert parse_yaml_vocabulary(yaml_example).classes == ("cup, handle", "person", "dog")


def test_a_caption_ontology_is_read_in_one_pass(monkeypatch) -> None:
    """4,000 prompts: the text is scanned for key lines once, not once per prompt (which took 0.46 s at
    4,000 prompts and grew with their square); the line of a duplicate at the end is still exact."""
    import re

    import gem_sam.naming.vocabulary as module

    scans = []  # regular-expression calls over the ontology's text

    def counted(function):
        def call(pattern, string, *args, **kwargs):
            scans.append(len(string) > 10_000)
            return function(pattern, string, *args, **kwargs)

        return call

    for name in ("finditer", "search", "findall", "match"):
        monkeypatch.setattr(module.re, name, counted(getattr(re, name)))
    monkeypatch.setattr(module.re, "compile", lambda *a, **k: CountedPattern(re.compile(*a, **k), scans))
    lines = [f'  "prompt {i}": "class {i % 50}"' for i in range(4000)] + ['  "prompt 7": "class 3"']
    text = "{\n" + ",\n".join(lines) + "\n}"
    with pytest.raises(ValueError) as caught:
        parse_caption_ontology(text)
    monkeypatch.undo()
    assert "line 4002: the prompt 'prompt 7' is given twice" in str(caught.value)
    assert sum(scans) == 1, len(scans)
    assert len(parse_caption_ontology("{\n" + ",\n".join(lines[:-1]) + "\n}").classes) == 50


class CountedPattern:
    """A compiled pattern whose scans of long texts are counted (``scans`` gets True per such scan)."""

    def __init__(self, pattern, scans: list) -> None:
        self.pattern, self.scans = pattern, scans

    def __getattr__(self, name: str):
        method = getattr(self.pattern, name)
        if name not in ("finditer", "search", "findall", "match"):
            return method

        def call(string, *args, **kwargs):
            self.scans.append(len(string) > 10_000)
            return method(string, *args, **kwargs)

        return call
