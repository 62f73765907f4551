"""`packed_attention`: causal attention inside each document of a packed row, optional sliding window, GQA.

Dispatch: the Triton kernels on CUDA tensors, per-document SDPA (`cwm_kernels/sdpa.py`) on CPU. The Triton
interpreter (TRITON_INTERPRET=1, CPU) is used only when asked for with backend="triton": it is a test vehicle,
tens of milliseconds per program instance, never a silent default.
"""

from __future__ import annotations

import math

import torch

from cwm_kernels.sdpa import packed_attention_sdpa


def check_inputs(q, k, v, cu_seqlens, max_seqlen, window) -> None:
    """One clear error per malformed input, before any kernel runs. On a GPU, max_seqlen must not be below the
    longest document (it bounds the tile work list) and is trusted, like cu_seqlens, without a host sync."""
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"q, k, v must be [T, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"k and v must be [T, Hkv, D] matching q [T, Hq, D]; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be a 1-D int32 tensor [n_docs + 1]; got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 (keys seen per query, itself included) or None; got {window}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device == cu_seqlens.device):
        raise ValueError(f"q, k, v, cu_seqlens must share a device (and q, k, v a dtype); got "
                         f"{q.dtype}/{k.dtype}/{v.dtype} on {q.device}/{k.device}/{v.device}/{cu_seqlens.device}")
    if not cu_seqlens.is_cuda:  # on a GPU these checks would cost a host sync per call
        cu = cu_seqlens.tolist()
        if cu[0] != 0 or cu[-1] != q.shape[0] or any(b < a for a, b in zip(cu, cu[1:])):
            raise ValueError(f"cu_seqlens must rise from 0 to T={q.shape[0]}; got {cu[:4]}...{cu[-2:]}")
        if max_seqlen < max(b - a for a, b in zip(cu, cu[1:])):
            raise ValueError(f"max_seqlen={max_seqlen} is shorter than the longest document in cu_seqlens")


def default_scale(head_dim: int, scale: float | None) -> float:
    """softmax scale: 1/sqrt(head_dim) unless given."""
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


class PackedAttention(torch.autograd.Function):
    """Triton forward (saves out and the log-sum-exp) and backward (delta, dk/dv, dq)."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, window, scale, deterministic):
        from cwm_kernels.attention_fwd import attention_forward

        q, k, v = (x.contiguous() for x in (q, k, v))
        out, lse, _ = attention_forward(q, k, v, cu_seqlens, max_seqlen, window, scale)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.max_seqlen, ctx.window, ctx.scale, ctx.deterministic = max_seqlen, window, scale, deterministic
        return out

    @staticmethod
    def backward(ctx, do):
        from cwm_kernels.attention_bwd import attention_backward

        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = attention_backward(q, k, v, out, lse, do, cu_seqlens, ctx.max_seqlen, ctx.window, ctx.scale,
                                        deterministic=ctx.deterministic)
        return dq, dk, dv, None, None, None, None, None


def packed_attention(q, k, v, cu_seqlens, max_seqlen, window=None, scale=None, *, deterministic=False, backend="auto"):
    """Attention of q [T, Hq, D] over k/v [T, Hkv, D] within documents [cu_seqlens[d], cu_seqlens[d+1]).

    Query i sees key j of its own document iff j <= i and, with `window`=W, i - W < j (W keys, itself included).
    `deterministic` computes dq in its own pass instead of with atomics (bitwise reproducible gradients).
    `backend`: "auto" (Triton on CUDA, else "torch"), "triton" (on CPU: needs TRITON_INTERPRET=1) or "torch".
    """
    check_inputs(q, k, v, cu_seqlens, max_seqlen, window)
    scale = default_scale(q.shape[-1], scale)
    if backend == "auto":
        backend = "triton" if q.is_cuda else "torch"
    if backend == "torch":
        return packed_attention_sdpa(q, k, v, cu_seqlens, window, scale)
    if backend != "triton":
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch'; got {backend!r}")
    return PackedAttention.apply(q, k, v, cu_seqlens, int(max_seqlen), window, scale, deterministic)
