"""Backward pass of packed-document attention (Triton): delta preprocess, dk/dv pass, and a dq pass.

- `_delta_kernel`: delta = rowsum(dO * O), the softmax-gradient correction, per (row, query head).
- `_dkdv_kernel`: one program per (key tile, key/value head). It loops over the GROUP query heads that share
  the kv head (so dk/dv need no atomics) and over the query tiles that can see its keys: from the tile's first
  key to min(doc_end, last key + window). With ATOMIC_DQ it also adds each ds @ k into an fp32 dq buffer.
- `_dq_kernel`: the deterministic alternative: one program per (query tile, query head) recomputes p and ds
  over the same key range as the forward pass and writes dq once, without atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cwm_kernels.attention_fwd import (INTERPRETED, LOG2E, _configs, _dot, _query_tile, _rows, _split_tiles, _visible,
                                   needs_i64)
from cwm_kernels.schedule import owned_block, tile_schedule


@triton.jit
def _delta_kernel(O, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, total,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, I64: tl.constexpr):
    block = tl.program_id(0)
    head = tl.program_id(1)
    offs_t = block * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_t < total)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(_rows(O + head * stride_oh, block * BLOCK_T, stride_ot, BLOCK_T, offs_d, False, I64), mask=ok, other=0.0)
    do = tl.load(_rows(DO + head * stride_doh, block * BLOCK_T, stride_dot, BLOCK_T, offs_d, False, I64), mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + head * total + offs_t, delta, mask=offs_t < total)


@triton.jit
def _dkdv_tiles(
    dk, dv, k, v, Q, DO, LSE, DELTA, DQ, head, stride_qt, stride_qh, stride_dot, stride_doh, stride_dqt, stride_dqh,
    total, offs_k, k_ok, k_end, offs_d, d_ok, q_lo, q_hi, first, last, scale, scale_log2, window,
    BLOCK_N: tl.constexpr, WINDOWED: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr,
    IEEE: tl.constexpr, ATOMIC_DQ: tl.constexpr, I64: tl.constexpr,
):
    """Accumulate dk, dv of the owned keys over query tiles first..last-1 (aligned at q_lo) of one query head."""
    for t in range(first, last):
        start_q = q_lo + t * BLOCK_N
        offs_q = start_q + tl.arange(0, BLOCK_N)
        q_ok = offs_q < q_hi
        qo_mask = q_ok[:, None] & d_ok[None, :]
        q = tl.load(_rows(Q + head * stride_qh, start_q, stride_qt, BLOCK_N, offs_d, False, I64), mask=qo_mask, other=0.0)
        do = tl.load(_rows(DO + head * stride_doh, start_q, stride_dot, BLOCK_N, offs_d, False, I64), mask=qo_mask, other=0.0)
        lse = tl.load(LSE + head * total + offs_q, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + head * total + offs_q, mask=q_ok, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        # Transposed scores [keys, queries]. Interior tiles still drop key rows past the document's end: their
        # exp2(0 - lse) could overflow and reach dq through ds.
        p_t = tl.math.exp2(_dot(k, tl.trans(q), IEEE) * scale_log2 - lse[None, :])
        if MASKED:
            vis_t = tl.trans(_visible(offs_q, offs_k, k_end, window, WINDOWED)) & q_ok[None, :]
        else:
            vis_t = k_ok[:, None]
        p_t = tl.where(vis_t, p_t, 0.0)
        dv += _dot(p_t.to(do.dtype), do, IEEE)
        ds_t = p_t * (_dot(v, tl.trans(do), IEEE) - delta[None, :])
        dk += _dot(ds_t.to(q.dtype), q, IEEE)
        if ATOMIC_DQ:
            dq = _dot(tl.trans(ds_t).to(k.dtype), k, IEEE)
            tl.atomic_add(_rows(DQ + head * stride_dqh, start_q, stride_dqt, BLOCK_N, offs_d, False, I64), dq * scale,
                          mask=qo_mask)
    return dk, dv


@triton.autotune(configs=_configs((32, 64)), key=["HEAD_DIM", "WINDOWED", "BLOCK_M", "ATOMIC_DQ"],
                 reset_to_zero=["DQ"])
@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ, WORK, CU,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh, stride_dqt, stride_dqh,
    total, scale, scale_log2, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr, ATOMIC_DQ: tl.constexpr, I64: tl.constexpr,
):
    # This program owns BLOCK_M keys; its inner loop walks BLOCK_N-row query tiles.
    item = tl.program_id(0)
    kv_head = tl.program_id(1)
    doc = tl.load(WORK + 2 * item)
    if doc < 0:
        return
    k_start = tl.load(WORK + 2 * item + 1)
    doc_end = tl.load(CU + doc + 1)
    k_end = tl.minimum(k_start + BLOCK_M, doc_end)

    offs_k = k_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k_ok = offs_k < k_end
    d_ok = offs_d < HEAD_DIM
    kv_mask = k_ok[:, None] & d_ok[None, :]
    k = tl.load(_rows(K + kv_head * stride_kh, k_start, stride_kt, BLOCK_M, offs_d, False, I64), mask=kv_mask, other=0.0)
    v = tl.load(_rows(V + kv_head * stride_vh, k_start, stride_vt, BLOCK_M, offs_d, False, I64), mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)

    # Queries [q_lo, q_hi) see some owned key; queries [k_end - 1, full_hi) see all of them.
    q_lo = k_start
    q_hi = doc_end
    full_hi = doc_end
    if WINDOWED:
        q_hi = tl.minimum(doc_end, k_end - 1 + window)
        full_hi = tl.minimum(doc_end, k_start + window)
    n_tiles, first_full, end_full = _split_tiles(q_lo, q_hi, k_end - 1, full_hi, BLOCK_N)

    dk = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, LSE, DELTA, DQ, head, stride_qt, stride_qh, stride_dot, stride_doh,
            stride_dqt, stride_dqh, total, offs_k, k_ok, k_end, offs_d, d_ok, q_lo, q_hi,
            0, tl.minimum(first_full, n_tiles), scale, scale_log2, window,
            BLOCK_N, WINDOWED, True, UPCAST, IEEE, ATOMIC_DQ, I64)
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, LSE, DELTA, DQ, head, stride_qt, stride_qh, stride_dot, stride_doh,
            stride_dqt, stride_dqh, total, offs_k, k_ok, k_end, offs_d, d_ok, q_lo, q_hi,
            first_full, end_full, scale, scale_log2, window,
            BLOCK_N, WINDOWED, False, UPCAST, IEEE, ATOMIC_DQ, I64)
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, LSE, DELTA, DQ, head, stride_qt, stride_qh, stride_dot, stride_doh,
            stride_dqt, stride_dqh, total, offs_k, k_ok, k_end, offs_d, d_ok, q_lo, q_hi,
            end_full, n_tiles, scale, scale_log2, window,
            BLOCK_N, WINDOWED, True, UPCAST, IEEE, ATOMIC_DQ, I64)

    tl.store(_rows(DK + kv_head * stride_dkh, k_start, stride_dkt, BLOCK_M, offs_d, False, I64),
             (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(_rows(DV + kv_head * stride_dvh, k_start, stride_dvt, BLOCK_M, offs_d, False, I64),
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_tiles(
    dq, q, do, lse, delta, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh,
    offs_m, row_ok, offs_d, d_ok, lo, hi, first, last, scale_log2, window,
    BLOCK_N: tl.constexpr, WINDOWED: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    I64: tl.constexpr,
):
    """Accumulate dq of the owned queries over key tiles first..last-1 (aligned at lo), as in the forward pass."""
    for t in range(first, last):
        start_n = lo + t * BLOCK_N
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if MASKED:
            kv_mask = (offs_n < hi)[None, :] & d_ok[:, None]
        else:
            kv_mask = d_ok[:, None]
        kt = tl.load(_rows(K + kv_head * stride_kh, start_n, stride_kt, BLOCK_N, offs_d, True, I64), mask=kv_mask, other=0.0)
        vt = tl.load(_rows(V + kv_head * stride_vh, start_n, stride_vt, BLOCK_N, offs_d, True, I64), mask=kv_mask, other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        p = tl.math.exp2(_dot(q, kt, IEEE) * scale_log2 - lse[:, None])
        if MASKED:
            p = tl.where(_visible(offs_m, offs_n, hi, window, WINDOWED) & row_ok[:, None], p, 0.0)
        ds = p * (_dot(do, vt, IEEE) - delta[:, None])
        dq += _dot(ds.to(kt.dtype), tl.trans(kt), IEEE)
    return dq


@triton.autotune(configs=_configs((32, 64)), key=["HEAD_DIM", "WINDOWED", "BLOCK_M"])
@triton.jit
def _dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, WORK, CU,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh,
    total, scale, scale_log2, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr, I64: tl.constexpr,
):
    item = tl.program_id(0)
    head = tl.program_id(1)
    doc, q_start, q_end, lo, n_tiles, first_full, end_full = _query_tile(
        WORK, CU, item, window, BLOCK_M, BLOCK_N, WINDOWED)
    if doc < 0:
        return
    kv_head = head // GROUP

    offs_m = q_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_end
    d_ok = offs_d < HEAD_DIM
    qo_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(_rows(Q + head * stride_qh, q_start, stride_qt, BLOCK_M, offs_d, False, I64), mask=qo_mask, other=0.0)
    do = tl.load(_rows(DO + head * stride_doh, q_start, stride_dot, BLOCK_M, offs_d, False, I64), mask=qo_mask, other=0.0)
    lse = tl.load(LSE + head * total + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + head * total + offs_m, mask=row_ok, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)

    hi = q_end
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh,
                   offs_m, row_ok, offs_d, d_ok, lo, hi, 0, tl.minimum(first_full, n_tiles), scale_log2, window,
                   BLOCK_N, WINDOWED, True, UPCAST, IEEE, I64)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh,
                   offs_m, row_ok, offs_d, d_ok, lo, hi, first_full, end_full, scale_log2, window,
                   BLOCK_N, WINDOWED, False, UPCAST, IEEE, I64)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh,
                   offs_m, row_ok, offs_d, d_ok, lo, hi, end_full, n_tiles, scale_log2, window,
                   BLOCK_N, WINDOWED, True, UPCAST, IEEE, I64)
    tl.store(_rows(DQ + head * stride_dqh, q_start, stride_dqt, BLOCK_M, offs_d, False, I64),
             (dq * scale).to(DQ.dtype.element_ty), mask=qo_mask)


def attention_backward(q, k, v, out, lse, do, cu_seqlens, max_seqlen, window, scale, *,
                       deterministic=False, block_m=None, grads=None):
    """Launch delta, dk/dv and (deterministic) dq kernels. Returns (dq, dk, dv) in the input dtypes.

    `grads` = (dq, dk, dv) buffers lets tests hand in poisoned outputs; with atomics dq is accumulated in a
    zeroed fp32 buffer and copied into the dq buffer at the end.
    """
    total, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    group = num_q_heads // num_kv_heads
    block_m = block_m or owned_block(q.device, head_dim, backward=True)
    block_d = max(16, triton.next_power_of_2(head_dim))
    do = do.contiguous()
    dq, dk, dv = grads if grads is not None else (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
    if total == 0:
        return dq, dk, dv
    common = dict(HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, WINDOWED=window is not None,
                  UPCAST=INTERPRETED, IEEE=q.dtype == torch.float32, I64=needs_i64(q))

    delta = torch.empty_like(lse)
    block_t = 64
    _delta_kernel[(triton.cdiv(total, block_t), num_q_heads)](
        out, do, delta, out.stride(0), out.stride(1), do.stride(0), do.stride(1), total,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_T=block_t, I64=common["I64"])

    work = tile_schedule(cu_seqlens, block_m, total, max_seqlen)
    dq_acc = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if not deterministic else dq
    _dkdv_kernel[(work.shape[0], num_kv_heads)](
        q, k, v, do, lse, delta, dk, dv, dq_acc, work, cu_seqlens,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), do.stride(0), do.stride(1),
        dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), dq_acc.stride(0), dq_acc.stride(1),
        total, scale, scale * LOG2E, window or 0, GROUP=group, ATOMIC_DQ=not deterministic, **common)

    if deterministic:
        _dq_kernel[(work.shape[0], num_q_heads)](
            q, k, v, do, lse, delta, dq, work, cu_seqlens,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), do.stride(0), do.stride(1),
            dq.stride(0), dq.stride(1),
            total, scale, scale * LOG2E, window or 0, GROUP=group, **common)
    else:
        dq.copy_(dq_acc)
    return dq, dk, dv
