"""scripts/decoder_op_count.py counts 2 m k n floating-point operations for each matrix product."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).parents[2] / "scripts" / "decoder_op_count.py"
spec = importlib.util.spec_from_file_location("decoder_op_count", SCRIPT)
op_count = importlib.util.module_from_spec(spec)
spec.loader.exec_module(op_count)


def test_matrix_product_flops_are_two_m_k_n() -> None:
    """Hand-computed: [3, 4] @ [4, 5] is 2*3*4*5 = 120; a batch of 2 of [3, 4] @ [4, 6] with an addend
    (in place) 2*2*3*4*6 = 288; an addmm of [5, 4] @ [4, 2] 80; an elementwise product counts nothing."""
    with torch.no_grad(), op_count.OperationCount() as counted:
        torch.randn(3, 4) @ torch.randn(4, 5)
        torch.zeros(2, 3, 6).baddbmm_(torch.randn(2, 3, 4), torch.randn(2, 4, 6))
        torch.addmm(torch.zeros(1, 2), torch.randn(5, 4), torch.randn(4, 2))
        torch.randn(7, 7) * torch.randn(7, 7)
    assert counted.product_flops == 120 + 288 + 80
    assert counted.count > 4  # every dispatched operation is counted, the random inputs' too
