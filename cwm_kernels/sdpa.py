"""Packed attention in plain PyTorch: scaled_dot_product_attention once per document.

The CPU path of `packed_attention` (no Triton there) and the "SDPA per document" baseline of the benchmarks.
Each document gets its own causal (and, if windowed, banded) mask, so memory is O(max doc length^2), not O(T^2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def packed_attention_sdpa(q, k, v, cu_seqlens, window=None, scale=None):
    """q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D]; same function as `packed_attention`, differentiable by autograd."""
    bounds = cu_seqlens.tolist()
    pieces = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qd, kd, vd = (x[start:end].transpose(0, 1) for x in (q, k, v))  # [H, n, D]
        n = end - start
        if window is None or window >= n:
            mask, causal = None, True
        else:
            i = torch.arange(n, device=q.device)
            mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
            causal = False
        od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, is_causal=causal, scale=scale,
                                            enable_gqa=qd.shape[0] != kd.shape[0])
        pieces.append(od.transpose(0, 1))
    return torch.cat(pieces, dim=0) if pieces else torch.empty_like(q)
