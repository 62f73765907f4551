"""Triton packed attention (in the interpreter; compiled on a GPU) against the float64 reference with an explicit mask.

Shapes are tiny because the interpreter costs tens of milliseconds per program instance; tiles are 16 rows,
so documents of 1..40 tokens cover length 1, lengths that are not multiples of the tile, and multi-tile docs.
Outputs are NaN-poisoned before every run so an element the kernels never write fails the comparison.
"""

import math

import pytest
import torch

from cwm_kernels import packed_attention
from cwm_kernels.reference import document_mask, packed_attention_reference

pytestmark = pytest.mark.usefixtures("triton_on_cpu")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

FP32_BOUND = 1e-5
FP16_BOUND = 3e-3 if DEVICE == "cpu" else 1e-2  # the interpreter upcasts; a GPU rounds p and ds to fp16


def make_case(lens, num_q_heads, num_kv_heads, head_dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total = sum(lens)
    q, k, v, do = (torch.randn(total, h, head_dim, generator=gen).to(DEVICE, dtype)
                   for h in (num_q_heads, num_kv_heads, num_kv_heads, num_q_heads))
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    return q, k, v, do, cu


def rel_err(got, ref):
    """||got - ref|| / ||ref||, or the absolute error where the reference is exactly zero (e.g. dq with window 1)."""
    diff = (got.double() - ref).norm().item()
    norm = ref.norm().item()
    return diff / norm if norm > 0 else diff


def run_kernels(q, k, v, do, cu, window, deterministic):
    """Forward and backward launchers on NaN-poisoned output buffers."""
    from cwm_kernels.attention_bwd import attention_backward
    from cwm_kernels.attention_fwd import attention_forward

    scale = q.shape[-1] ** -0.5
    max_len = int((cu[1:] - cu[:-1]).max())
    out, lse, _ = attention_forward(q, k, v, cu, max_len, window, scale, out=torch.full_like(q, math.nan))
    poisoned = tuple(torch.full_like(x, math.nan) for x in (q, k, v))
    grads = attention_backward(q, k, v, out, lse, do, cu, max_len, window, scale,
                               deterministic=deterministic, grads=poisoned)
    return out, grads


def reference_with_grads(q, k, v, do, cu, window):
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = packed_attention_reference(*leaves, cu, window)
    return ref.detach(), torch.autograd.grad(ref, leaves, do.double())


LENGTHS = [1, 17, 5, 33, 8, 16]  # 80 tokens: a 1-token doc, a full tile, docs of 1..3 tiles, non-multiples of 16

CASES = [
    # (lengths, Hq, Hkv, D, window, deterministic)
    pytest.param(LENGTHS, 4, 2, 16, None, False, id="global-gqa2"),
    pytest.param(LENGTHS, 2, 1, 16, 1, False, id="window1-gqa2"),
    pytest.param(LENGTHS, 2, 1, 16, 6, True, id="window6<docs-gqa2-det"),
    pytest.param(LENGTHS, 2, 1, 16, 17, False, id="window17=doc-gqa2"),
    pytest.param(LENGTHS, 2, 2, 16, 100, True, id="window100>docs-mha-det"),
    pytest.param([40, 3, 22], 4, 1, 16, 20, False, id="window20-gqa4"),
    pytest.param([40, 3, 22], 4, 1, 8, None, True, id="global-gqa4-d8-det"),
    pytest.param([2, 31, 1], 2, 1, 24, 9, False, id="window9-gqa2-d24"),
    # window > 2 tiles: key tiles strictly inside the window take the unmasked (interior) path
    pytest.param([70, 3, 45], 2, 1, 16, 40, False, id="window40-interior-tiles"),
    pytest.param([70, 3, 45], 2, 1, 16, 40, True, id="window40-interior-tiles-det"),
]


@pytest.mark.parametrize("lens,hq,hkv,d,window,deterministic", CASES)
def test_forward_and_gradients_match_float64_reference(lens, hq, hkv, d, window, deterministic):
    q, k, v, do, cu = make_case(lens, hq, hkv, d, seed=len(lens) + (window or 0))
    out, grads = run_kernels(q, k, v, do, cu, window, deterministic)
    ref, ref_grads = reference_with_grads(q, k, v, do, cu, window)
    for name, got in zip(("out", "dq", "dk", "dv"), (out, *grads)):
        assert not torch.isnan(got).any(), f"{name}: NaN (unwritten or non-finite element)"
    assert rel_err(out, ref) < FP32_BOUND
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert rel_err(got, want) < FP32_BOUND, name


def test_fp16_inputs_within_fp16_bound():
    lens = [19, 1, 12]
    q, k, v, do, cu = make_case(lens, 2, 1, 16, dtype=torch.float16, seed=3)
    out, grads = run_kernels(q, k, v, do, cu, window=7, deterministic=False)
    ref, ref_grads = reference_with_grads(q, k, v, do, cu, window=7)
    assert out.dtype == torch.float16 and not torch.isnan(out).any()
    assert rel_err(out, ref) < FP16_BOUND
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert got.dtype == torch.float16 and not torch.isnan(got).any(), name
        assert rel_err(got, want) < FP16_BOUND, name


def test_autograd_function_matches_reference_and_kernel_is_wired():
    """The public entry point, backward through torch.autograd, with a custom scale."""
    lens = [9, 21]
    q, k, v, do, cu = make_case(lens, 2, 1, 16, seed=5)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = packed_attention(*leaves, cu, max(lens), window=5, scale=0.3, backend="triton")
    out.backward(do)
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ref = packed_attention_reference(*ref_leaves, cu, 5, scale=0.3)
    ref.backward(do.double())
    assert rel_err(out.detach(), ref.detach()) < FP32_BOUND
    for leaf, ref_leaf in zip(leaves, ref_leaves):
        assert rel_err(leaf.grad, ref_leaf.grad) < FP32_BOUND


@pytest.mark.parametrize("window", [None, 1, 5, 16, 40])
def test_torch_path_matches_reference(window):
    """The CPU fallback (per-document SDPA) computes the same function, gradients included."""
    lens = [1, 30, 7, 16]
    q, k, v, do, cu = make_case(lens, 6, 2, 16, seed=7)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = packed_attention(*leaves, cu, max(lens), window=window, backend="torch")
    grads = torch.autograd.grad(out, leaves, do)
    ref, ref_grads = reference_with_grads(q, k, v, do, cu, window)
    assert rel_err(out.detach(), ref) < FP32_BOUND
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < FP32_BOUND


def visible_key_tiles(cu, window, block_m, block_n):
    """Oracle from the dense mask: per document-aligned query tile, ceil(|keys any of its queries sees| / block_n).

    The visible keys of a query tile form one contiguous range, so this is the fewest block_n-wide key tiles that
    cover every unmasked pair of the tile; a kernel that visits any masked-only tile counts more.
    """
    mask = document_mask(cu, window)
    counts = []
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        for q0 in range(start, end, block_m):
            keys = mask[q0 : min(q0 + block_m, end)].any(0).nonzero().flatten()
            assert int(keys[-1] - keys[0]) + 1 == keys.numel(), "visible keys of a tile are contiguous"
            counts.append(math.ceil(keys.numel() / block_n))
    return counts


@pytest.mark.parametrize("window", [None, 1, 7, 16, 50])
def test_forward_visits_only_tiles_with_unmasked_pairs(window):
    from cwm_kernels.attention_fwd import _fwd_kernel, attention_forward

    lens = [1, 70, 17, 5]
    q, k, v, _, cu = make_case(lens, 2, 1, 16, seed=11)
    block_m = 16
    _, _, visits = attention_forward(q, k, v, cu, max(lens), window, 0.25, block_m=block_m, count_tiles=True)
    block_n = getattr(_fwd_kernel, "best_config", _fwd_kernel.configs[0]).kwargs["BLOCK_N"]  # autotuned on a GPU
    expected = visible_key_tiles(cu.cpu(), window, block_m, block_n)
    assert visits[:, 0].tolist() == expected
    assert (visits == visits[:, :1]).all(), "every head walks the same tiles"
    if window == 1:  # cost follows the unmasked area: one key tile per query tile, whatever the document length
        assert visits.sum().item() == 2 * len(expected)


@pytest.mark.parametrize("bad,match", [
    (dict(cu=torch.tensor([0, 5, 10])), "int32"),
    (dict(cu=torch.tensor([0, 5, 9], dtype=torch.int32)), "rise from 0 to T=10"),
    (dict(window=0), "window must be >= 1"),
    (dict(hkv=3), "multiple of key/value heads"),
    (dict(max_seqlen=4), "max_seqlen=4 is shorter"),
    (dict(k_dtype=torch.float16), "share a device"),
])
def test_bad_input_is_named(bad, match):
    q, k, v, _, cu = make_case([5, 5], 4, bad.get("hkv", 2), 16)
    k = k.to(bad.get("k_dtype", k.dtype))
    with pytest.raises(ValueError, match=match):
        packed_attention(q, k, v, bad.get("cu", cu), bad.get("max_seqlen", 5), window=bad.get("window"))
