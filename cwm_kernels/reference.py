"""Float64 reference for packed-document attention, with the mask written out explicitly.

Every kernel test compares against this. It is deliberately naive (a dense T x T mask, float64 softmax)
so that it shares no indexing logic with the tiled kernels it checks.
"""

from __future__ import annotations

import torch


def document_mask(cu_seqlens: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Dense boolean [T, T] mask: query i sees key j iff same document, j <= i, and (window) i - window < j."""
    bounds = [int(x) for x in cu_seqlens.tolist()]
    total = bounds[-1]
    doc_of = torch.empty(total, dtype=torch.long)
    for d in range(len(bounds) - 1):
        doc_of[bounds[d] : bounds[d + 1]] = d
    i = torch.arange(total)[:, None]
    j = torch.arange(total)[None, :]
    mask = (doc_of[:, None] == doc_of[None, :]) & (j <= i)
    if window is not None:
        mask &= j > i - window
    return mask


def packed_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v in float64; q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq, D] float64.

    Differentiable (plain autograd on float64), so gradients of the reference are the oracle for dq/dk/dv.
    """
    total, num_q_heads, head_dim = q.shape
    group = num_q_heads // k.shape[1]
    scale = head_dim**-0.5 if scale is None else scale
    qf, kf, vf = (x.double() for x in (q, k, v))
    kf = kf.repeat_interleave(group, dim=1)
    vf = vf.repeat_interleave(group, dim=1)
    scores = torch.einsum("ihd,jhd->hij", qf, kf) * scale
    mask = document_mask(cu_seqlens, window).to(q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hij,jhd->ihd", probs, vf)
