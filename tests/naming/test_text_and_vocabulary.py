"""Vocabulary files, prompt templates and the per-class template ensemble."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from gem_sam.naming.text import encode_vocabulary, validate_templates, validate_vocabulary, warn_truncated_names
from gem_sam.naming.vocabulary import parse_vocabulary, read_vocabulary


@pytest.mark.parametrize(
    "text,expected",
    [
        ("cat\ndog\n", ["cat", "dog"]),
        ("# comment\n\n  cat  \n\n#dog\nred car\n", ["cat", "red car"]),
        ("C# developer\n", ["C# developer"]),  # only whole-line comments
        ("chat\nchien\n猫\nÉléphant\n", ["chat", "chien", "猫", "Éléphant"]),
    ],
)
def test_parse_vocabulary(text: str, expected: list[str]) -> None:
    vocabulary = parse_vocabulary(text)
    assert list(vocabulary.classes) == expected and vocabulary.is_flat


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty"),
        ("# only comments\n\n", "empty"),
        ("cat\ndog\ncat\n", "line 3: class 'cat' is declared again"),
        ("# c\n\ncat\n\ncat\n", "line 5: class 'cat' is declared again"),
    ],
)
def test_bad_vocabulary(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_vocabulary(text)


def test_read_vocabulary_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_vocabulary(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.txt.*empty"):
        read_vocabulary(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="UTF-8"):
        read_vocabulary(binary)


@pytest.mark.parametrize("templates", [(), ("no placeholder",), ("two {} {}",)])
def test_bad_templates(templates: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="template"):
        validate_templates(templates)


def test_validate_vocabulary_strips_and_rejects_blank() -> None:
    assert validate_vocabulary([" cat ", "dog"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="position 1"):
        validate_vocabulary(["cat", "  "])


def test_template_ensemble_by_hand() -> None:
    """Per class: normalise each template's embedding, average, normalise again."""
    vectors = {
        "a cat": torch.tensor([3.0, 4.0, 0.0]),
        "the cat": torch.tensor([0.0, 0.0, 2.0]),
        "a dog": torch.tensor([1.0, 0.0, 0.0]),
        "the dog": torch.tensor([0.0, 5.0, 0.0]),
    }
    prompts: list[str] = []

    def tokenizer(texts: list[str]) -> torch.Tensor:
        prompts.extend(texts)
        return torch.arange(len(prompts) - len(texts), len(prompts))

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack([vectors[prompts[int(i)]] for i in tokens])

    out = encode_vocabulary(["cat", "dog"], encode_tokens=encode, tokenizer=tokenizer, templates=("a {}", "the {}"))
    cat = F.normalize(torch.tensor([0.6, 0.8, 1.0]), dim=0)
    dog = F.normalize(torch.tensor([1.0, 1.0, 0.0]), dim=0)
    torch.testing.assert_close(out, torch.stack([cat, dog]))
    assert prompts == ["a cat", "the cat", "a dog", "the dog"]


def test_class_names_too_long_for_the_text_encoder_are_named() -> None:
    """open_clip's tokenizer cuts prompts at its context (77 tokens) without a word; we warn."""
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    long_name = " ".join(["very"] * 80) + " long cat"  # 82 words, one token each
    with pytest.warns(UserWarning, match="class name 'very very .* long cat' is too long .* reads 77") as caught:
        truncated = warn_truncated_names(["cat", long_name], templates=("a photo of a {}.",), tokenizer=tokenizer)
    assert truncated == [long_name] and len(caught) == 1
    # 'a photo of a' (4 tokens) + 70 words + '.' + start and end tokens = 77: fits exactly
    fits = " ".join(["very"] * 70)
    assert warn_truncated_names([fits], templates=("a photo of a {}.",), tokenizer=tokenizer) == []
    assert len(tokenizer.encode(f"a photo of a {fits}.")) + 2 == 77
