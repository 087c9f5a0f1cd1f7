"""Golden outputs of the official GEM implementation, for the parity test.

Runs in its own environment with the official package and the open_clip it was written for
(gem_sam itself is not imported)::

    python -m venv /tmp/gem-oracle
    /tmp/gem-oracle/bin/pip install torch torchvision "open_clip_torch==2.23.0" "gem_torch==1.0.1"
    /tmp/gem-oracle/bin/python scripts/make_gem_parity_fixture.py --out tests/naming/fixtures/gem_parity_small.pt

It builds a randomly initialised open_clip model (the small test ViT by default, or any open_clip
name such as ViT-B-16), rounds every weight to a float16-representable value so that the fixture can
store them in half precision without changing them, and records for each paper depth d in {4, 6},
iteration count K in {1, 2} and input (square at the native grid, square resized, non-square):
the official GEM's patch-level cosine similarities [1, C, h, w], the text embeddings, and for
d = 4, K = 1 its bilinearly upsampled similarities [1, C, H, W] (``normalize=False``). The official ``gem_depth``
is the paper's d + 1. ``tests/naming/test_gem_parity.py`` compares gem_sam against the file; point it at a
larger fixture with ``GEM_PARITY_FIXTURE=PATH``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

SMALL_MODEL_NAME = "gem-parity-vit-s16"
SMALL_MODEL_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 8, "width": 48, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CLASSES = ["cat", "dog", "astronaut", "red car", "sky"]
DEPTHS = (4, 6)  # the paper's d
ITERATIONS = (1, 2)
SEED = 20240617


def register_small_model() -> None:
    import open_clip

    folder = Path(tempfile.mkdtemp())
    (folder / f"{SMALL_MODEL_NAME}.json").write_text(json.dumps(SMALL_MODEL_CONFIG))
    open_clip.add_model_config(folder)


def input_sizes(native: int, patch: int) -> dict[str, tuple[int, int]]:
    return {
        "square_native": (native, native),
        "square_resized": (native + patch, native + patch),
        "non_square": (native, native + 3 * patch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SMALL_MODEL_NAME, help="open_clip model name (default: small test ViT)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    import gem
    import open_clip

    register_small_model()
    torch.manual_seed(SEED)
    model = open_clip.create_model(args.model, pretrained=None)
    state = {
        key: value.half().float() if value.is_floating_point() else value for key, value in model.state_dict().items()
    }
    tokenizer = open_clip.get_tokenizer(args.model)
    patch = model.visual.patch_size[0]
    native = model.visual.image_size[0]

    images = {name: torch.randn(1, 3, *size_hw).half().float() for name, size_hw in input_sizes(native, patch).items()}
    cases = []
    text = None
    for depth in DEPTHS:
        for iterations in ITERATIONS:
            fresh = open_clip.create_model(args.model, pretrained=None)
            fresh.load_state_dict(state)
            wrapper = gem.gem_wrapper.GEMWrapper(
                model=fresh.eval(), tokenizer=tokenizer, depth=depth + 1, ss_attn_iter=iterations
            ).eval()
            with torch.no_grad():
                text = wrapper.encode_text(CLASSES)[0]  # [C, E]
                for image_name, image in images.items():
                    feat_gem, _ = wrapper.model.visual(image)  # [1, 1 + h*w, E]
                    feat = F.normalize(feat_gem, dim=-1)[:, 1:]
                    h, w = image.shape[2] // patch, image.shape[3] // patch
                    patch_sims = (feat @ text.T).reshape(1, h, w, -1).permute(0, 3, 1, 2)  # [1, C, h, w]
                    case = {
                        "depth": depth,
                        "iterations": iterations,
                        "image": image_name,
                        "patch_similarity": patch_sims.contiguous(),
                    }
                    if (depth, iterations) == (DEPTHS[0], ITERATIONS[0]):  # full-size maps for one setting
                        case["upsampled_similarity"] = wrapper(image, CLASSES, normalize=False)  # [1, C, H, W]
                    cases.append(case)
    # Store only the token-embedding rows the prompts use (the rest are never read).
    used_tokens = torch.unique(tokenizer([f"a photo of a {name}." for name in CLASSES]))
    state["token_embedding.weight"] = state["token_embedding.weight"][used_tokens]
    fixture = {
        "model_name": args.model,
        "model_config": SMALL_MODEL_CONFIG if args.model == SMALL_MODEL_NAME else None,
        "state_dict_fp16": {key: value.half() if value.is_floating_point() else value for key, value in state.items()},
        "token_rows": used_tokens,
        "classes": CLASSES,
        "text_embeddings": text,
        "images": images,
        "cases": cases,
        "versions": {name: importlib.metadata.version(name) for name in ("open_clip_torch", "torch", "gem_torch")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print(f"wrote {args.out}: {len(cases)} cases, {fixture['versions']}")


if __name__ == "__main__":
    main()
