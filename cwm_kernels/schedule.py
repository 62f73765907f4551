"""Tile work lists for packed attention, built from cu_seqlens on the tensor's own device.

A kernel program owns one tile of rows (queries in the forward and dq passes, keys in the dk/dv pass).
Tiles are aligned to document starts, so a tile never spans two documents and every row of a program
shares one document: its loop bounds then come straight from that document and the window.
"""

from __future__ import annotations

import torch


def tile_schedule(cu_seqlens: torch.Tensor, block: int, total: int, max_seqlen: int) -> torch.Tensor:
    """Work list [n_items, 2] int32 of (document, first row) for `block`-row tiles aligned to document starts.

    On CUDA the length is an upper bound (no host sync): sum_d ceil(len_d / block) <= T / block + n_docs and
    <= n_docs * ceil(max_seqlen / block); surplus items carry document -1 and their programs return at once.
    On CPU (the Triton interpreter, where each program costs tens of milliseconds) the list is exact.
    """
    cu = cu_seqlens.to(torch.int64)
    n_docs = cu.numel() - 1
    lengths = cu[1:] - cu[:-1]
    tiles_per_doc = (lengths + block - 1) // block
    tiles_end = torch.cumsum(tiles_per_doc, 0)
    if cu.is_cuda:
        n_items = min(n_docs * -(-int(max_seqlen) // block), -(-int(total) // block) + n_docs)
    else:
        n_items = int(tiles_end[-1]) if n_docs else 0
    item = torch.arange(n_items, device=cu.device)
    doc = torch.searchsorted(tiles_end, item, right=True)
    valid = doc < n_docs
    doc_c = doc.clamp(max=max(n_docs - 1, 0))
    tile_in_doc = item - (tiles_end[doc_c] - tiles_per_doc[doc_c])
    start = cu[doc_c] + tile_in_doc * block
    work = torch.stack([torch.where(valid, doc, -1), torch.where(valid, start, -1)], dim=1)
    return work.to(torch.int32).contiguous()


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1, read when kernels are defined)."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


def owned_block(device: torch.device, head_dim: int, backward: bool = False) -> int:
    """Rows a program owns. Fixed per launch (not autotuned) because the work list is built for it.

    On a GPU: 128 for the forward at D <= 128 (as in the Triton fused-attention tutorial); the dk/dv program keeps
    two fp32 [rows, D] accumulators plus its k and v tiles in registers, so it owns 64 rows above D = 64.
    16 in the interpreter, so tiny test documents still span several tiles.
    """
    if device.type != "cuda":
        return 16
    if backward:
        return 128 if head_dim <= 64 else 64
    return 128 if head_dim <= 128 else 64
