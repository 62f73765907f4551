"""The compiled kernels on a GPU: fp16/bf16, head dims 64 and 128, autotuned tiles, bitwise-deterministic
backward. Skipped with the reason where there is no CUDA (the interpreter tests cover the same logic on CPU)."""

import pytest
import torch

from cwm_kernels import packed_attention
from cwm_kernels.reference import packed_attention_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA: compiled Triton kernels need a GPU"),
]
BOUNDS = {torch.float16: 5e-3, torch.bfloat16: 2e-2}


def make_case(dtype, head_dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = [1, 700, 129, 64, 1500, 3, 511]  # 2908 tokens: tile-aligned and ragged documents
    total = sum(lengths)
    q, k, v, do = (torch.randn(total, h, head_dim, generator=gen).to("cuda", dtype) for h in (8, 2, 2, 8))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    return q, k, v, do, cu, max(lengths)


def rel_err(got, ref):
    return ((got.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("window", [None, 256])
def test_gpu_matches_float64_reference(dtype, head_dim, window):
    q, k, v, do, cu, max_len = make_case(dtype, head_dim)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = packed_attention(*leaves, cu, max_len, window=window)
    grads = torch.autograd.grad(out, leaves, do)
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ref = packed_attention_reference(*ref_leaves, cu, window)
    ref_grads = torch.autograd.grad(ref, ref_leaves, do.double())
    assert not torch.isnan(out).any() and rel_err(out, ref) < BOUNDS[dtype]
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert not torch.isnan(got).any() and rel_err(got, want) < BOUNDS[dtype], name


def test_gpu_deterministic_backward_is_bitwise_reproducible():
    q, k, v, do, cu, max_len = make_case(torch.bfloat16, 128, seed=1)
    runs = []
    for _ in range(2):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = packed_attention(*leaves, cu, max_len, window=512, deterministic=True)
        runs.append(torch.autograd.grad(out, leaves, do))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
