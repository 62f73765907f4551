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

from kernels.attention_fwd import INTERPRETED, LOG2E, _configs, _visible
from kernels.schedule import owned_block, tile_schedule


@triton.jit
def _delta_kernel(O, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, total,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    block = tl.program_id(0)
    head = tl.program_id(1)
    offs_t = block.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_t < total)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(O + offs_t[:, None] * stride_ot + head * stride_oh + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + offs_t[:, None] * stride_dot + head * stride_doh + offs_d[None, :], mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + head * total + offs_t, delta, mask=offs_t < total)


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
    WINDOWED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr, ATOMIC_DQ: tl.constexpr,
):
    # This program owns BLOCK_M keys; its inner loop walks BLOCK_N-row query tiles.
    item = tl.program_id(0)
    kv_head = tl.program_id(1)
    doc = tl.load(WORK + 2 * item)
    if doc < 0:
        return
    k_start = tl.load(WORK + 2 * item + 1).to(tl.int64)
    doc_end = tl.load(CU + doc + 1)
    k_end = tl.minimum(k_start + BLOCK_M, doc_end)

    offs_k = k_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k_ok = offs_k < k_end
    d_ok = offs_d < HEAD_DIM
    kv_mask = k_ok[:, None] & d_ok[None, :]
    k = tl.load(K + offs_k[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + offs_k[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)

    q_lo = k_start
    q_hi = doc_end
    if WINDOWED:
        q_hi = tl.minimum(doc_end, k_end - 1 + window)

    dk = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        for start_q in range(q_lo, q_hi, BLOCK_N):
            offs_q = start_q + tl.arange(0, BLOCK_N)
            q_ok = offs_q < q_hi
            qo_mask = q_ok[:, None] & d_ok[None, :]
            q = tl.load(Q + offs_q[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=qo_mask, other=0.0)
            do = tl.load(DO + offs_q[:, None] * stride_dot + head * stride_doh + offs_d[None, :], mask=qo_mask, other=0.0)
            lse = tl.load(LSE + head * total + offs_q, mask=q_ok, other=0.0)
            delta = tl.load(DELTA + head * total + offs_q, mask=q_ok, other=0.0)
            if UPCAST:
                q = q.to(tl.float32)
                do = do.to(tl.float32)
            # Transposed scores [keys, queries]: visible when the query sees the key.
            if IEEE:
                qk_t = tl.dot(k, tl.trans(q), input_precision="ieee")
            else:
                qk_t = tl.dot(k, tl.trans(q))
            vis_t = tl.trans(_visible(offs_q, offs_k, k_end, window, WINDOWED)) & q_ok[None, :]
            p_t = tl.where(vis_t, tl.math.exp2(qk_t * scale_log2 - lse[None, :]), 0.0)
            if IEEE:
                dv += tl.dot(p_t.to(do.dtype), do, input_precision="ieee")
                dp_t = tl.dot(v, tl.trans(do), input_precision="ieee")
            else:
                dv += tl.dot(p_t.to(do.dtype), do)
                dp_t = tl.dot(v, tl.trans(do))
            ds_t = p_t * (dp_t - delta[None, :])
            if IEEE:
                dk += tl.dot(ds_t.to(q.dtype), q, input_precision="ieee")
            else:
                dk += tl.dot(ds_t.to(q.dtype), q)
            if ATOMIC_DQ:
                if IEEE:
                    dq = tl.dot(tl.trans(ds_t).to(k.dtype), k, input_precision="ieee")
                else:
                    dq = tl.dot(tl.trans(ds_t).to(k.dtype), k)
                tl.atomic_add(DQ + offs_q[:, None] * stride_dqt + head * stride_dqh + offs_d[None, :],
                              dq * scale, mask=qo_mask)

    tl.store(DK + offs_k[:, None] * stride_dkt + kv_head * stride_dkh + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + offs_k[:, None] * stride_dvt + kv_head * stride_dvh + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.autotune(configs=_configs((32, 64)), key=["HEAD_DIM", "WINDOWED", "BLOCK_M"])
@triton.jit
def _dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, WORK, CU,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh,
    total, scale, scale_log2, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
):
    item = tl.program_id(0)
    head = tl.program_id(1)
    doc = tl.load(WORK + 2 * item)
    if doc < 0:
        return
    q_start = tl.load(WORK + 2 * item + 1).to(tl.int64)
    doc_start = tl.load(CU + doc)
    doc_end = tl.load(CU + doc + 1)
    q_end = tl.minimum(q_start + BLOCK_M, doc_end)
    kv_head = head // GROUP

    offs_m = q_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_end
    d_ok = offs_d < HEAD_DIM
    qo_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + offs_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=qo_mask, other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + head * stride_doh + offs_d[None, :], mask=qo_mask, other=0.0)
    lse = tl.load(LSE + head * total + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + head * total + offs_m, mask=row_ok, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)

    lo = doc_start
    if WINDOWED:
        lo = tl.maximum(doc_start, q_start - window + 1)
    hi = q_end
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        kt = tl.load(K + offs_n[None, :] * stride_kt + kv_head * stride_kh + offs_d[:, None],
                     mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        vt = tl.load(V + offs_n[None, :] * stride_vt + kv_head * stride_vh + offs_d[:, None],
                     mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        if IEEE:
            qk = tl.dot(q, kt, input_precision="ieee")
            dp = tl.dot(do, vt, input_precision="ieee")
        else:
            qk = tl.dot(q, kt)
            dp = tl.dot(do, vt)
        vis = _visible(offs_m, offs_n, hi, window, WINDOWED) & row_ok[:, None]
        p = tl.where(vis, tl.math.exp2(qk * scale_log2 - lse[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        if IEEE:
            dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision="ieee")
        else:
            dq += tl.dot(ds.to(kt.dtype), tl.trans(kt))
    tl.store(DQ + offs_m[:, None] * stride_dqt + head * stride_dqh + offs_d[None, :],
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
                  UPCAST=INTERPRETED, IEEE=q.dtype == torch.float32)

    delta = torch.empty_like(lse)
    block_t = 64
    _delta_kernel[(triton.cdiv(total, block_t), num_q_heads)](
        out, do, delta, out.stride(0), out.stride(1), do.stride(0), do.stride(1), total,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_T=block_t)

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
