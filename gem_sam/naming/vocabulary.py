"""Vocabularies: the classes a run writes, the text prompts of each, and background prompts.

Three file formats say the same thing (``read_vocabulary`` picks one by the file's extension):

- text (``.txt`` and anything else), one entry per line, ``#`` lines and blank lines ignored::

      # a class that is its own prompt
      cup
      # a class and its prompts, comma-separated
      person: person, man, woman, child
      # reserved: masks these prompts win are not written
      background: sky, wall, floor

  Text after `` #`` on an entry's line is a comment too, with a warning (a ``#`` inside a prompt needs
  the YAML format);

- autodistill's CaptionOntology as JSON (``.json``): ``{"prompt": "class", ...}``; prompts of the class
  ``background`` are background prompts;
- YAML (``.yaml``, ``.yml``) for names with commas or colons::

      classes:
        "cup, handle": [cup]
        person: [person, man, woman]
        dog: dog                            # one prompt
      background: [sky, wall]

A class's similarity inside a mask is the maximum over its prompts (``class_similarity``). Prompts
are compared as CLIP's tokenizer sees them (``prompt_key``: NFC, whitespace collapsed, case folded), so
``Cup`` and ``cup``, or ``coffee  cup`` and ``coffee cup``, are one prompt and refused as a duplicate;
``background`` is reserved in every case. Errors name the file's line and what to fix.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BACKGROUND = "background"  # the reserved class name of background prompts (in any case)
TRAILING_COMMENT = re.compile(r"\s#")  # a comment after an entry in the text format


def prompt_key(text: str) -> str:
    """What CLIP's tokenizer can tell apart in a prompt or class name: Unicode NFC, whitespace runs as
    one space, case folded. Two texts with the same key get the same tokens."""
    return unicodedata.normalize("NFC", " ".join(text.split())).casefold()


def is_background(name: str) -> bool:
    """Whether a class name is the reserved ``background``, in any case."""
    return prompt_key(name) == BACKGROUND


class VocabularyWarning(UserWarning):
    """Something in a vocabulary file that is read, but may not say what was meant."""


@dataclass(frozen=True)
class Vocabulary:
    """Classes (in output order, without background), their prompts, and background prompts.

    ``prompts[i]`` are the prompts of ``classes[i]``. Every prompt appears once in the whole vocabulary.
    """

    classes: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    background: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.prompts):
            raise ValueError(f"{len(self.classes)} classes but {len(self.prompts)} prompt lists")
        if not self.classes:
            raise ValueError("the vocabulary has no class" + (" besides background" if self.background else ""))
        reserved = [name for name in self.classes if is_background(name)]
        if reserved:
            raise ValueError(f"{reserved[0]!r} is the reserved class {BACKGROUND!r}; give its prompts as background")
        seen: dict[str, tuple[str, str]] = {}
        for name, prompts in [*zip(self.classes, self.prompts, strict=True), (BACKGROUND, self.background)]:
            if name != BACKGROUND and not prompts:
                raise ValueError(f"class {name!r} has no prompt")
            for prompt in prompts:
                if not prompt.strip():
                    raise ValueError(f"class {name!r} has an empty prompt")
                key = prompt_key(prompt)
                if key in seen:
                    first, owner = seen[key]
                    raise ValueError(
                        f"the prompt {prompt!r} of {name!r} is the prompt {first!r} of {owner!r} to CLIP "
                        "(case, spacing and Unicode form aside)"
                    )
                seen[key] = (prompt, name)
        if len({prompt_key(name) for name in self.classes}) != len(self.classes):
            raise ValueError("a class is declared twice (case, spacing and Unicode form aside)")

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Vocabulary:
        """One prompt per class, the class name itself (the plain list of class names)."""
        names = tuple(str(name).strip() for name in names)
        if any(is_background(name) for name in names):
            raise ValueError(f"{BACKGROUND!r} is reserved for background prompts; give it prompts in a vocabulary file")
        return cls(classes=names, prompts=tuple((name,) for name in names))

    def prompts_of(self, name: str) -> tuple[str, ...]:
        """The prompts of class ``name`` (``"background"``: the background prompts)."""
        if is_background(name):
            return self.background
        if name not in self.classes:
            raise KeyError(f"{name!r} is not a class of this vocabulary; its classes are {', '.join(self.classes)}")
        return self.prompts[self.classes.index(name)]

    @property
    def all_prompts(self) -> tuple[str, ...]:
        """Every prompt: the classes' in class order, then the background prompts."""
        return tuple(prompt for prompts in self.prompts for prompt in prompts) + self.background

    @property
    def prompt_class(self) -> torch.Tensor:
        """[P] int64: for each of ``all_prompts``, the index of its class; ``len(classes)`` for background."""
        owners = [index for index, prompts in enumerate(self.prompts) for _ in prompts]
        return torch.tensor(owners + [len(self.classes)] * len(self.background), dtype=torch.long)

    @property
    def is_flat(self) -> bool:
        """Each class its own only prompt, no background: a plain list of class names."""
        return not self.background and all(
            prompts == (name,) for name, prompts in zip(self.classes, self.prompts, strict=True)
        )

    def settings(self) -> dict[str, Any]:
        """The vocabulary as a run records it: the classes, and the prompts when they are not the classes."""
        out: dict[str, Any] = {"vocabulary": list(self.classes)}
        if not self.is_flat:
            out["prompts"] = {name: list(prompts) for name, prompts in zip(self.classes, self.prompts, strict=True)}
            out["background"] = list(self.background)
        return out


def as_vocabulary(vocabulary: Vocabulary | Sequence[str]) -> Vocabulary:
    """A ``Vocabulary`` as it is, or one made from a list of class names."""
    return vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary.from_names(vocabulary)


def class_similarity(pooled: torch.Tensor, prompt_class: torch.Tensor, n_groups: int) -> torch.Tensor:
    """pooled: [M, P] similarity of each prompt inside each mask; prompt_class: [P] group of each prompt
    in [0, n_groups). Returns [M, n_groups]: per group, the maximum over its prompts (a group without
    prompts gets -inf)."""
    out = torch.full((pooled.shape[0], n_groups), float("-inf"), dtype=pooled.dtype, device=pooled.device)
    index = prompt_class.to(pooled.device)[None, :].expand_as(pooled)
    return out.scatter_reduce(1, index, pooled, reduce="amax", include_self=True)


# --- files ----------------------------------------------------------------------------------------


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used; the message names the line."""


@dataclass
class _Builder:
    """Collects classes and prompts with the line each came from, refusing conflicts by line. Class names
    and prompts are compared by ``prompt_key``; a class named ``background`` in any case takes
    background prompts."""

    classes: dict[str, list[str]]
    class_line: dict[str, tuple[int, str]]  # name key -> (line, name as first written)
    prompt_line: dict[str, tuple[int, str, str]]  # prompt key -> (line, prompt as written, class)
    background: list[str]

    @classmethod
    def new(cls) -> _Builder:
        return cls(classes={}, class_line={}, prompt_line={}, background=[])

    def declare(self, name: str, *, line: int) -> str:
        """Start class ``name`` (stripped); returns its name, ``BACKGROUND`` for background in any case."""
        name = name.strip()
        if not name:
            raise VocabularyError(f"line {line}: the class name is empty")
        if is_background(name):
            return BACKGROUND
        key = prompt_key(name)
        if key in self.class_line:
            first, written = self.class_line[key]
            same = "" if written == name else f" as {written!r}"
            raise VocabularyError(
                f"line {line}: class {name!r} is declared again (first on line {first}{same}); "
                "give all its prompts on one line"
            )
        self.classes[name] = []
        self.class_line[key] = (line, name)
        return name

    def add(self, name: str, prompts: Sequence[str], *, line: int) -> None:
        name = self.declare(name, line=line)
        if not prompts:
            raise VocabularyError(f"line {line}: {name!r} has no prompt; list them after the colon, comma-separated")
        for prompt in prompts:
            self.add_prompt(name, prompt, line=line)

    def add_prompt(self, name: str, prompt: str, *, line: int) -> None:
        prompt = prompt.strip()
        if not prompt:
            raise VocabularyError(f"line {line}: {name!r} has an empty prompt (two commas in a row, or a trailing one)")
        key = prompt_key(prompt)
        if key in self.prompt_line:
            first, written, owner = self.prompt_line[key]
            same = "" if written == prompt else f" {written!r}, which CLIP reads the same"
            raise VocabularyError(
                f"line {line}: the prompt {prompt!r} of {name!r} is already a prompt of {owner!r}{same} "
                f"(line {first}); each prompt may name one class"
            )
        self.prompt_line[key] = (line, prompt, name)
        (self.background if name == BACKGROUND else self.classes[name]).append(prompt)

    def build(self) -> Vocabulary:
        if not self.classes and not self.background:
            raise VocabularyError("the vocabulary is empty: give at least one class name")
        if not self.classes:
            line = min(line for line, _, owner in self.prompt_line.values() if owner == BACKGROUND)
            raise VocabularyError(
                f"line {line}: {BACKGROUND!r} is the only class; add the classes to label (background prompts "
                "only compete with them)"
            )
        return Vocabulary(
            classes=tuple(self.classes),
            prompts=tuple(tuple(prompts) for prompts in self.classes.values()),
            background=tuple(self.background),
        )


def parse_vocabulary(text: str) -> Vocabulary:
    """A vocabulary from the text format (see the module docstring)."""
    builder = _Builder.new()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        comment = TRAILING_COMMENT.search(line)
        if comment:
            warnings.warn(
                f"line {number}: {line[comment.start() :].strip()!r} is read as a comment; a '#' inside "
                "a prompt needs the YAML format",
                VocabularyWarning,
                stacklevel=2,
            )
            line = line[: comment.start()].strip()
        if ":" in line:
            name, _, listed = line.partition(":")
            builder.add(name, listed.split(",") if listed.strip() else [], line=number)
        elif is_background(line):
            raise VocabularyError(
                f"line {number}: {BACKGROUND!r} is reserved for background prompts; write 'background: sky, wall, ...'"
            )
        else:
            builder.add(line, [line], line=number)
    return builder.build()


def _key_lines(text: str) -> dict[str, list[int]]:
    """Each JSON object key of ``text`` (valid JSON) -> the 1-based lines it appears on, in order: one
    pass over the text's strings (outside strings, valid JSON has no quotes)."""
    lines: dict[str, list[int]] = {}
    line, position = 1, 0
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"(\s*:)?', text):
        line += text.count("\n", position, match.start())
        position = match.start()
        if match.group(1) is not None:
            key = json.loads(text[match.start() : match.end() - len(match.group(1))])
            lines.setdefault(key, []).append(line)
    return lines


def parse_caption_ontology(text: str) -> Vocabulary:
    """A vocabulary from autodistill's CaptionOntology JSON, ``{"prompt": "class", ...}``: classes in
    the order they first appear; prompts mapped to ``background`` are background prompts."""
    pairs: list[tuple[str, Any]] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda items: pairs.extend(items) or dict(items))
    except json.JSONDecodeError as error:
        raise VocabularyError(f"line {error.lineno}: not valid JSON ({error.msg})") from error
    if not isinstance(data, dict):
        raise VocabularyError('line 1: a CaptionOntology is one JSON object, {"prompt": "class", ...}')
    by_class: dict[str, list[tuple[str, int]]] = {}
    seen: dict[str, int] = {}
    key_lines = _key_lines(text)
    for prompt, name in pairs:
        seen[prompt] = seen.get(prompt, 0) + 1
        found = key_lines.get(prompt, [])
        line = found[seen[prompt] - 1] if len(found) >= seen[prompt] else 1
        if seen[prompt] > 1:
            raise VocabularyError(f"line {line}: the prompt {prompt!r} is given twice; each prompt may name one class")
        if not isinstance(name, str):
            raise VocabularyError(
                f"line {line}: the prompt {prompt!r} maps to {name!r}; map each prompt to a class name"
            )
        by_class.setdefault(name.strip(), []).append((prompt, line))
    builder = _Builder.new()
    for name, prompts in by_class.items():
        first_line = prompts[0][1]
        if not name:
            raise VocabularyError(f"line {first_line}: the prompt {prompts[0][0]!r} maps to an empty class name")
        name = builder.declare(name, line=first_line)
        for prompt, line in prompts:
            builder.add_prompt(name, prompt, line=line)
    return builder.build()


def parse_yaml_vocabulary(text: str) -> Vocabulary:
    """A vocabulary from YAML: ``classes`` maps each class to its prompts (a list or one string; an
    empty value makes the class its own prompt), ``background`` lists background prompts."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise VocabularyError(f"line {mark.line + 1 if mark else 1}: not valid YAML ({error})") from error
    if not isinstance(root, yaml.MappingNode):
        raise VocabularyError("line 1: the YAML vocabulary is a mapping with 'classes:' (and 'background:')")
    sections = {}
    for key, value in root.value:
        name = _yaml_key(key)
        section = BACKGROUND if is_background(name) else name
        if section in sections:
            raise VocabularyError(f"line {key.start_mark.line + 1}: {name!r} is given twice")
        if section not in ("classes", BACKGROUND):
            raise VocabularyError(
                f"line {key.start_mark.line + 1}: unknown key {name!r}; use 'classes' and 'background'"
            )
        sections[section] = value
    builder = _Builder.new()
    classes = sections.get("classes")
    if not isinstance(classes, yaml.MappingNode):
        line = classes.start_mark.line + 1 if classes is not None else 1
        raise VocabularyError(f"line {line}: 'classes' must map each class name to its prompts")
    for key, value in classes.value:
        line, name = key.start_mark.line + 1, _yaml_key(key)
        if is_background(name):
            raise VocabularyError(f"line {line}: put background prompts under the top-level 'background:' key")
        builder.add(name, _yaml_prompts(value, default=name, line=line), line=line)
    if BACKGROUND in sections:
        node = sections[BACKGROUND]
        builder.add(
            BACKGROUND, _yaml_prompts(node, default=None, line=node.start_mark.line + 1), line=node.start_mark.line + 1
        )
    return builder.build()


def _yaml_key(node: Any) -> str:
    """A mapping key's text; a key that is a list or a mapping (``? [a, b]``) is refused with its line."""
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
        raise VocabularyError(f"line {node.start_mark.line + 1}: a key is {kind}; keys must be plain names")
    return str(node.value)


def _yaml_prompts(node: Any, *, default: str | None, line: int) -> list[str]:
    """The prompts of a YAML node: a list of strings, one string, or (with ``default``) empty."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        if node.value == "" or node.tag.endswith(":null"):
            return [default] if default is not None else []
        return [node.value]
    if isinstance(node, yaml.SequenceNode) and all(isinstance(item, yaml.ScalarNode) for item in node.value):
        return [item.value for item in node.value]
    raise VocabularyError(f"line {line}: prompts must be a list of strings or one string")


PARSERS = {".json": parse_caption_ontology, ".yaml": parse_yaml_vocabulary, ".yml": parse_yaml_vocabulary}


def read_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """A vocabulary from a UTF-8 file: ``.json`` (CaptionOntology), ``.yaml`` / ``.yml``, else the text
    format. Errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary file {str(path)!r} does not exist (one class per line, or 'class: prompt, prompt')"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"vocabulary file {str(path)!r} is not UTF-8 text: {error}") from error
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VocabularyWarning)
            vocabulary = PARSERS.get(path.suffix.lower(), parse_vocabulary)(text)
    except ValueError as error:
        raise ValueError(f"vocabulary file {str(path)!r}, {error}") from error
    for warning in caught:  # again, naming the file
        warnings.warn(f"vocabulary file {str(path)!r}, {warning.message}", warning.category, stacklevel=2)
    return vocabulary
