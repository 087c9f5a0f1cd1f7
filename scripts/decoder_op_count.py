"""How many tensor operations the point-prompt decoder dispatches for one batch of prompts, with the CPU's
work sizes and with a GPU's (``gem_sam.sam.point_decoder.WorkSizes``), and the floating-point operations
of its matrix products per prompt.

    python scripts/decoder_op_count.py                          # SAM ViT-B, 64 prompts
    python scripts/decoder_op_count.py --sam-model sam2.1_hiera_t --prompts 64
    python scripts/decoder_op_count.py --logit-extent 192 256   # the mask logits of a 4:3 photo's part

The matrix products are the work that no reorganisation of the exact computation removes: their count
over a machine's rate for float32 products is a lower bound on the decoder's time there.

On a GPU each operation is at least one kernel launch, and with the decoder's small per-prompt tensors the
launches, not the arithmetic, set its time there. Unlike a time, the count is the same on every machine;
it runs on the CPU with random-init weights of the real architecture (the count does not depend on them).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MATRIX_PRODUCTS = {"mm", "addmm", "addmm_", "bmm", "baddbmm", "baddbmm_"}  # (b)mm and their forms with an addend


def product_flops(name: str, args: tuple) -> int:
    """2 m k n (times the batch) for an ATen matrix product ``name`` with the operands ``args``."""
    first, second = (args[0], args[1]) if name in ("mm", "bmm") else (args[1], args[2])
    return 2 * first.numel() * second.shape[-1]  # first: [(b,) m, k], second: [(b,) k, n]


class OperationCount(TorchDispatchMode):
    """Counts the ATen operations dispatched while it is active, and the FLOPs of their matrix products."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.product_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - the dispatch protocol
        self.count += 1
        name = func.overloadpacket.__name__
        if name in MATRIX_PRODUCTS:
            self.product_flops += product_flops(name, args)
        return func(*args, **(kwargs or {}))


def decoder_modules(sam_model: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The prompt encoder and mask decoder of a random-init ``sam_model``."""
    from gem_sam.sam import SAM_ARCHITECTURES, build_sam2_model, build_sam_model, is_sam2_model

    if is_sam2_model(sam_model):
        model = build_sam2_model(sam_model)
        return model.sam_prompt_encoder, model.sam_mask_decoder
    sam = build_sam_model(SAM_ARCHITECTURES[sam_model])
    return sam.prompt_encoder, sam.mask_decoder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam-model", default="vit_b", help="vit_b|vit_l|vit_h, or sam2.1_hiera_t|s|b+|l (SAM 2)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts in the batch (default: 64, SAM's batch)")
    parser.add_argument(
        "--logit-extent",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="the low-resolution region whose mask logits are formed (a 480x640 photo in SAM 1: 192 256); "
        "default: the whole 256x256 frame",
    )
    args = parser.parse_args(argv)
    if args.prompts < 1:
        parser.error(f"--prompts {args.prompts}: give at least 1")
    if args.logit_extent is not None and not all(1 <= size <= 256 for size in args.logit_extent):
        parser.error(f"--logit-extent {' '.join(map(str, args.logit_extent))}: each must be 1 to 256")

    from gem_sam.sam.point_decoder import PointPromptDecoder, WorkSizes

    prompt_encoder, mask_decoder = decoder_modules(args.sam_model)
    torch.manual_seed(0)
    embedding = torch.randn(1, 256, 64, 64)
    coords = torch.rand(args.prompts, 2) * 1024
    print(f"{args.sam_model}, {args.prompts} prompts: operations dispatched (each one kernel launch or more on a GPU)")
    with torch.no_grad():
        for device in ("cpu", "cuda"):
            sizes = WorkSizes.for_device(torch.device(device))
            decoder = PointPromptDecoder(prompt_encoder, mask_decoder, work_sizes=sizes)
            with OperationCount() as transformer:
                tokens, image_tokens = decoder.transform(embedding, coords)
            with OperationCount() as logits:
                decoder.mask_logits(tokens, image_tokens, torch.arange(args.prompts), extent_hw=args.logit_extent)
            print(
                f"  {device} work sizes ({sizes.prompts_per_chunk or 'all'} prompts a chunk, "
                f"{sizes.tokens_per_band or 'all'} tokens a band, {sizes.prompts_per_logit_batch} prompt(s) a batch of "
                f"mask logits): transformer {transformer.count}, mask logits of all prompts {logits.count}; "
                f"matrix products per prompt: transformer {transformer.product_flops / args.prompts / 1e6:.0f} MFLOP, "
                f"mask logits {logits.product_flops / args.prompts / 1e6:.0f} MFLOP"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
