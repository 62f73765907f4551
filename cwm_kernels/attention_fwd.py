"""Forward pass of packed-document attention (Triton), keeping the log-sum-exp for the backward pass.

One program per (query tile, query head). The query tile lies inside one document (see `schedule.py`), so
its keys run from max(doc_start, q_start - window + 1) to the tile's last query: tiles outside the document or
the window are never loaded, and cost follows the unmasked area. Key tiles seen whole by every query of the
tile (the interior) skip the mask; only tiles on the causal diagonal or the window's far edge apply it.
Online softmax in base 2 as in the Triton fused-attention tutorial.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cwm_kernels.schedule import interpreting, owned_block, tile_schedule

LOG2E = 1.4426950408889634
# Triton fixes interpreter vs compiled mode when a kernel is defined, i.e. when this module is imported.
INTERPRETED = interpreting()


def _configs(inner_blocks: tuple[int, ...]) -> list[triton.Config]:
    """Hopper-oriented search space; a single small config in the interpreter, where each trial costs seconds."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_N": 16}, num_warps=1, num_stages=1)]
    return [
        triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s)
        for n in inner_blocks
        for w in (4, 8)
        for s in (2, 3)
    ]


@triton.jit
def _visible(offs_m, offs_n, key_end, window, WINDOWED: tl.constexpr):
    """[M, N] mask: key n is in this document's range, causal, and (if windowed) within the last `window` keys."""
    vis = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < key_end)
    if WINDOWED:
        vis = vis & (offs_n[None, :] > offs_m[:, None] - window)
    return vis


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    """fp32 inputs get exact fp32 products (not TF32); fp16/bf16 use the tensor cores with fp32 accumulation."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _rows(base, start, stride_t, BLOCK: tl.constexpr, offs_d, TRANSPOSE: tl.constexpr, I64: tl.constexpr):
    """Pointers to rows start..start+BLOCK-1 of a [T, D] head slice: [BLOCK, D], or [D, BLOCK] transposed.

    Offsets are 32-bit unless I64 (set by the launcher when T * row stride reaches 2**31): 64-bit index tiles
    cost registers, and ptxas spilled with them at D = 128."""
    r = start + tl.arange(0, BLOCK)
    if I64:
        r = r.to(tl.int64)
    if TRANSPOSE:
        return base + r[None, :] * stride_t + offs_d[:, None]
    else:
        return base + r[:, None] * stride_t + offs_d[None, :]


@triton.jit
def _split_tiles(lo, hi, full_lo, full_hi, BLOCK: tl.constexpr):
    """Tiles [lo + t*BLOCK, ...) cover [lo, hi). Tiles t in [first_full, end_full) lie inside [full_lo, full_hi),
    where every pair of the program's tile is visible, so they skip the mask; the others (t < first_full or
    t >= end_full) sit on the causal or window edge and apply it. Returns (n_tiles, first_full, end_full)."""
    n_tiles = (hi - lo + BLOCK - 1) // BLOCK
    first_full = (full_lo - lo + BLOCK - 1) // BLOCK
    end_full = tl.maximum(first_full, tl.minimum(n_tiles, (full_hi - lo) // BLOCK))
    return n_tiles, first_full, end_full


@triton.jit
def _query_tile(WORK, CU, item, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WINDOWED: tl.constexpr):
    """A query-tile work item (forward and dq kernels): its document (-1 marks a padding item with nothing to
    do), its rows [q_start, q_end), and its key tiles: keys [lo, q_end) are those some row sees, keys from
    full_lo up to q_start + 1 are seen by all rows. Returns (doc, q_start, q_end, lo, n_tiles, first_full, end_full)."""
    doc = tl.load(WORK + 2 * item)
    q_start = tl.load(WORK + 2 * item + 1)
    safe_doc = tl.maximum(doc, 0)
    doc_start = tl.load(CU + safe_doc)
    q_end = tl.minimum(q_start + BLOCK_M, tl.load(CU + safe_doc + 1))
    lo = doc_start
    full_lo = doc_start
    if WINDOWED:
        lo = tl.maximum(doc_start, q_start - window + 1)
        full_lo = tl.maximum(doc_start, q_end - window)
    n_tiles, first_full, end_full = _split_tiles(lo, q_end, full_lo, q_start + 1, BLOCK_N)
    return doc, q_start, q_end, lo, n_tiles, first_full, end_full


@triton.jit
def _fwd_tiles(
    acc, l_i, m_i, visits, q, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh,
    offs_m, row_ok, offs_d, d_ok, lo, hi, first, last, scale_log2, window,
    BLOCK_N: tl.constexpr, WINDOWED: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    I64: tl.constexpr,
):
    """Online-softmax update over key tiles first..last-1 (aligned at lo); MASKED only for edge tiles."""
    for t in range(first, last):
        start_n = lo + t * BLOCK_N
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kt_ptrs = _rows(K + kv_head * stride_kh, start_n, stride_kt, BLOCK_N, offs_d, True, I64)
        v_ptrs = _rows(V + kv_head * stride_vh, start_n, stride_vt, BLOCK_N, offs_d, False, I64)
        if MASKED:
            n_ok = offs_n < hi
            kt = tl.load(kt_ptrs, mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            kt = tl.load(kt_ptrs, mask=d_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        qk = _dot(q, kt, IEEE) * scale_log2
        if MASKED:
            # Rows past the tile's end see every loaded key: finite garbage that is never stored, instead of NaN.
            vis = _visible(offs_m, offs_n, hi, window, WINDOWED) | ~row_ok[:, None]
            qk = tl.where(vis, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new
        visits += 1
    return acc, l_i, m_i, visits


@triton.autotune(configs=_configs((64, 128)), key=["HEAD_DIM", "WINDOWED", "BLOCK_M"])
@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE, WORK, CU, VISITS,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    total, num_q_heads, scale_log2, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr, COUNT: tl.constexpr, I64: tl.constexpr,
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
    q = tl.load(_rows(Q + head * stride_qh, q_start, stride_qt, BLOCK_M, offs_d, False, I64),
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    hi = q_end

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    visits = 0
    # Edge tiles before the interior (window edge), the interior without masks, edge tiles after (causal edge).
    acc, l_i, m_i, visits = _fwd_tiles(
        acc, l_i, m_i, visits, q, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh, offs_m, row_ok,
        offs_d, d_ok, lo, hi, 0, tl.minimum(first_full, n_tiles), scale_log2, window,
        BLOCK_N, WINDOWED, True, UPCAST, IEEE, I64)
    acc, l_i, m_i, visits = _fwd_tiles(
        acc, l_i, m_i, visits, q, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh, offs_m, row_ok,
        offs_d, d_ok, lo, hi, first_full, end_full, scale_log2, window,
        BLOCK_N, WINDOWED, False, UPCAST, IEEE, I64)
    acc, l_i, m_i, visits = _fwd_tiles(
        acc, l_i, m_i, visits, q, K, V, kv_head, stride_kt, stride_kh, stride_vt, stride_vh, offs_m, row_ok,
        offs_d, d_ok, lo, hi, end_full, n_tiles, scale_log2, window,
        BLOCK_N, WINDOWED, True, UPCAST, IEEE, I64)

    acc = acc / l_i[:, None]
    tl.store(_rows(O + head * stride_oh, q_start, stride_ot, BLOCK_M, offs_d, False, I64),
             acc.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE + head * total + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)
    if COUNT:
        tl.store(VISITS + item * num_q_heads + head, visits)


def needs_i64(q: torch.Tensor) -> bool:
    """Whether row * row stride can reach 2**31 (rows past T included: masked tiles still form their pointers)."""
    return (q.shape[0] + 256) * q.stride(0) >= 2**31


def attention_forward(q, k, v, cu_seqlens, max_seqlen, window, scale, *, block_m=None, out=None, count_tiles=False):
    """Launch the forward kernel. Returns (out [T, Hq, D], lse2 [Hq, T] float32 in log2 units, visits or None).

    `out` lets tests hand in a poisoned buffer; `count_tiles` records per-program key-tile iterations.
    """
    total, num_q_heads, head_dim = q.shape
    if not q.is_cuda and not INTERPRETED:
        raise RuntimeError("Triton kernels on CPU tensors need TRITON_INTERPRET=1 set before `cwm_kernels` is first used")
    block_m = block_m or owned_block(q.device, head_dim)
    work = tile_schedule(cu_seqlens, block_m, total, max_seqlen)
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty((num_q_heads, total), device=q.device, dtype=torch.float32)
    visits = torch.zeros((work.shape[0], num_q_heads), device=q.device, dtype=torch.int32) if count_tiles else lse
    if work.shape[0] == 0:
        return out, lse, (visits if count_tiles else None)
    _fwd_kernel[(work.shape[0], num_q_heads)](
        q, k, v, out, lse, work, cu_seqlens, visits,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        total, num_q_heads, scale * LOG2E, window or 0,
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_M=block_m, WINDOWED=window is not None, UPCAST=INTERPRETED, IEEE=q.dtype == torch.float32,
        COUNT=count_tiles, I64=needs_i64(q),
    )
    return out, lse, (visits if count_tiles else None)
