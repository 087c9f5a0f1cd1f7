"""Text embeddings of prompts: prompt templates, averaged per prompt (CLIP's prompt ensemble)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
TEMPLATE_SETS: tuple[str, ...] = ("imagenet",)  # named template ensembles (``template_set``)


def template_set(name: str) -> tuple[str, ...]:
    """A named ensemble of prompt templates, each with ``{}`` for the prompt: ``imagenet`` is CLIP's 80
    ImageNet templates (open_clip's ``OPENAI_IMAGENET_TEMPLATES``)."""
    if name != "imagenet":
        raise ValueError(f"template set {name!r} is not one of {', '.join(TEMPLATE_SETS)}")
    import open_clip

    return tuple(template("{}") for template in open_clip.OPENAI_IMAGENET_TEMPLATES)


def validate_vocabulary(classes: Sequence[str]) -> list[str]:
    """Strip class names and reject an empty vocabulary, empty names or duplicates."""
    names = [str(name).strip() for name in classes]
    if not names:
        raise ValueError("the vocabulary is empty: give at least one class name")
    if any(not name for name in names):
        raise ValueError(f"the vocabulary has an empty class name at position {names.index('')}")
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"the vocabulary lists {name!r} twice (positions {seen[name]} and {position}); "
                "each class must appear once"
            )
        seen[name] = position
    return names


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Each template must contain exactly one ``{}`` where the class name goes."""
    if not templates:
        raise ValueError("give at least one prompt template, e.g. 'a photo of a {}.'")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
    return tuple(templates)


@torch.no_grad()
def encode_vocabulary(
    classes: Sequence[str],
    *,
    encode_tokens: Callable[[torch.Tensor], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Embed every class with every template; returns [C, E] L2-normalised float32.

    Per class, the template embeddings are L2-normalised, averaged and normalised again
    (the CLIP prompt-ensemble convention); with one template this is that template's embedding.
    """
    names = validate_vocabulary(classes)
    templates = validate_templates(templates)
    warn_truncated_names(names, templates=templates, tokenizer=tokenizer)
    return _encode_with_templates(
        names,
        encode_tokens=encode_tokens,
        tokenizer=tokenizer,
        templates=templates,
        device=device,
        batch_size=batch_size,
    )


def warn_truncated_names(names: Sequence[str], *, templates: Sequence[str], tokenizer: Callable) -> list[str]:
    """Warn, naming each, about class names whose prompt exceeds the text encoder's context (the
    tokenizer would cut it off silently); returns those names. Tokenizers without ``encode`` and
    ``context_length`` (open_clip's BPE tokenizer has both) are not checked."""
    encode = getattr(tokenizer, "encode", None)
    context_length = getattr(tokenizer, "context_length", None)
    if encode is None or context_length is None:
        return []
    truncated = []
    for name in names:
        longest = max((template.format(name) for template in templates), key=lambda prompt: len(encode(prompt)))
        tokens = len(encode(longest)) + 2  # start and end tokens
        if tokens > context_length:
            truncated.append(name)
            warnings.warn(
                f"class name {name!r} is too long for the text encoder: its prompt {longest!r} has {tokens} tokens "
                f"and the encoder reads {context_length}; the rest is cut off. Shorten the name.",
                UserWarning,
                stacklevel=3,
            )
    return truncated


@torch.no_grad()
def encode_empty_prompt(
    *,
    encode_tokens: Callable[[torch.Tensor], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """[E] embedding of the templates with an empty class name (CLIP Surgery's redundant text)."""
    return _encode_with_templates(
        [""], encode_tokens=encode_tokens, tokenizer=tokenizer, templates=validate_templates(templates), device=device
    )[0]


def _encode_with_templates(
    names: Sequence[str],
    *,
    encode_tokens: Callable[[torch.Tensor], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    templates: Sequence[str],
    device: torch.device | str,
    batch_size: int = 256,
) -> torch.Tensor:
    prompts = [template.format(name) for name in names for template in templates]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size]).to(device)
        chunks.append(F.normalize(encode_tokens(tokens).float(), dim=-1))
    embeddings = torch.cat(chunks).reshape(len(names), len(templates), -1)  # [C, T, E]
    if len(templates) == 1:
        return embeddings[:, 0]
    return F.normalize(embeddings.mean(dim=1), dim=-1)
