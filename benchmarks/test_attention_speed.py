"""Packed-attention speed on a GPU: forward and backward time and TFLOP/s of `cwm_kernels.packed_attention` against
FlexAttention (compiled, block mask; mask-building time reported separately), SDPA per document, and
flash-attn's varlen function where importable, all in the same run on the same inputs.

Shapes follow CWM (48 query / 8 KV heads, head dim 128, bf16), rows of T = 16k..128k tokens filled with the
heavy-tailed document mix of benchmarks/conftest.py, a sliding window of 8192 and global attention.
FLOPs are counted over unmasked (query, key) pairs only: forward 4*D*Hq per pair, backward 2.5x that.
Skipped, with the reason printed, on a machine without CUDA.
"""

from __future__ import annotations

import time

import pytest
import torch

SEQ_LENS = (16_384, 32_768, 65_536, 131_072)
WINDOWS = (8192, None)
NUM_Q_HEADS, NUM_KV_HEADS, HEAD_DIM, DTYPE = 48, 8, 128, torch.bfloat16
DEVICE = "cuda"
SDPA_MASK_LIMIT = 32_768  # SDPA needs an explicit n x n mask for a windowed document longer than the window

pytestmark = pytest.mark.gpu


def unmasked_pairs(lengths: list[int], window: int | None) -> int:
    """Sum over documents of sum_i min(i + 1, window): the (query, key) pairs attention actually computes."""
    total = 0
    for n in lengths:
        w = n if window is None else min(window, n)
        total += w * (w + 1) // 2 + (n - w) * w
    return total


def make_inputs(lengths: list[int], seed: int = 0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    total = sum(lengths)
    q, k, v, do = (torch.randn(total, h, HEAD_DIM, device=DEVICE, dtype=DTYPE, generator=gen)
                   for h in (NUM_Q_HEADS, NUM_KV_HEADS, NUM_KV_HEADS, NUM_Q_HEADS))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=DEVICE, dtype=torch.int32)
    return [x.requires_grad_() for x in (q, k, v)], do, cu


def flex_implementation(lengths, window, cu):
    """FlexAttention with a document (+window) block mask; returns (fn, mask-building ms)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    total = sum(lengths)
    doc_id = torch.repeat_interleave(torch.arange(len(lengths), device=DEVICE), cu.diff().long())

    def mask_mod(b, h, q_idx, kv_idx):
        visible = (doc_id[q_idx] == doc_id[kv_idx]) & (kv_idx <= q_idx)
        if window is not None:
            visible = visible & (q_idx - kv_idx < window)
        return visible

    torch.cuda.synchronize(DEVICE)
    start = time.perf_counter()
    block_mask = create_block_mask(mask_mod, None, None, total, total, device=DEVICE)
    torch.cuda.synchronize(DEVICE)
    mask_ms = (time.perf_counter() - start) * 1e3
    compiled = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v):
        out = compiled(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=block_mask, enable_gqa=True)
        return out[0].transpose(0, 1)

    return run, mask_ms


def implementations(lengths, window, cu):
    """name -> (fn(q, k, v) -> out, note). Missing baselines appear with the reason instead of a function."""
    from cwm_kernels import packed_attention
    from cwm_kernels.sdpa import packed_attention_sdpa

    max_len = max(lengths)
    impls = {
        "packed_attention (Triton)": (lambda q, k, v: packed_attention(q, k, v, cu, max_len, window=window), ""),
        "packed_attention, deterministic bwd": (
            lambda q, k, v: packed_attention(q, k, v, cu, max_len, window=window, deterministic=True), ""),
    }
    flex, mask_ms = flex_implementation(lengths, window, cu)
    impls["FlexAttention (compiled, block mask)"] = (flex, f"mask build {mask_ms:.1f} ms")
    if window is not None and max_len > max(window, SDPA_MASK_LIMIT):
        impls["SDPA per document"] = (None, f"skipped: {max_len}-token doc needs a {max_len}^2 window mask")
    else:
        impls["SDPA per document"] = (lambda q, k, v: packed_attention_sdpa(q, k, v, cu, window), "")
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as exc:
        impls["flash-attn varlen"] = (None, f"not importable ({exc.__class__.__name__})")
    else:
        window_size = (-1, -1) if window is None else (window - 1, 0)
        impls["flash-attn varlen"] = (
            lambda q, k, v: flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, causal=True, window_size=window_size), "")
    return impls


@pytest.mark.parametrize("window", WINDOWS, ids=["window8192", "global"])
@pytest.mark.parametrize("total", SEQ_LENS)
def test_attention_speed(total, window, doc_lengths, show_table):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA: the attention speed table needs a GPU (packing figures run on CPU)")
    from triton.testing import do_bench

    lengths = doc_lengths.filling(total, seed=total)
    (q, k, v), do, cu = make_inputs(lengths)
    pairs = unmasked_pairs(lengths, window)
    fwd_flop = 4 * HEAD_DIM * NUM_Q_HEADS * pairs
    ours = None
    rows = []
    for name, (fn, note) in implementations(lengths, window, cu).items():
        if fn is None:
            rows.append([name, "-", "-", "-", "-", "-", note])
            continue
        out = fn(q, k, v)
        if ours is None:
            ours = out.detach()
        else:  # every implementation computes the same function
            err = ((out.detach().float() - ours.float()).norm() / ours.float().norm()).item()
            assert err < 2e-2, f"{name} disagrees with packed_attention: relative error {err:.3g}"
        fwd_ms = do_bench(lambda: fn(q, k, v))
        bwd_ms = do_bench(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True))
        rows.append([name, f"{fwd_ms:.2f}", f"{fwd_flop / fwd_ms / 1e9:.0f}", f"{bwd_ms:.2f}",
                     f"{2.5 * fwd_flop / bwd_ms / 1e9:.0f}", f"{fwd_ms + bwd_ms:.2f}", note])
        del out
    base = next(float(r[5]) for r in rows if r[0].startswith("FlexAttention"))
    for r in rows:
        r.insert(6, "-" if r[5] == "-" else f"{base / float(r[5]):.2f}x")
    show_table(
        f"Attention T={total}, window {window or 'global'}, {len(lengths)} docs (longest {max(lengths)}), "
        f"{pairs / 1e9:.2f}G unmasked pairs, Hq {NUM_Q_HEADS} / Hkv {NUM_KV_HEADS}, D {HEAD_DIM}, {str(DTYPE).removeprefix('torch.')}",
        ["implementation", "fwd ms", "fwd TFLOP/s", "bwd ms", "bwd TFLOP/s", "fwd+bwd ms", "speed vs Flex", "note"],
        rows,
    )
