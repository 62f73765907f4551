"""Context parallelism (CP): one packed row split across the ranks of a CP group, documents and windows respected.

Split (`balance_cuts`). Each rank owns one contiguous range of the row. The cut points are placed at equal shares
of the row's *unmasked attention area*, summed over the model's layers, not at equal token counts: query token i
at position p of its document sees min(p + 1, W) keys on a layer with window W (p + 1 on a full layer), so a
rank holding the tail of a long document does far more attention work per token than one holding short traces.
The per-token cost is exact and computed from `cu_seqlens` alone (O(T), vectorised), so the split is exact to one
token; a cut is moved onto a nearby document boundary when that costs less than `snap` of a share, because a
range that starts at a document start borrows nothing.

Exchange (`KVExchange`). Only the first document piece of a rank's range can start before the range (every
later piece starts at a document start inside it), so the keys a rank's queries may see and it does not hold
are one contiguous global range [lo, start): the earlier part of that document, clipped to the last `window - 1`
tokens on sliding layers. Every rank derives every rank's needs from `cu_seqlens`, so one `all_to_all_single`
per layer moves exactly those K/V rows (k and v concatenated) and nothing else; a row split at document boundaries
exchanges nothing. Its autograd backward runs the reverse all-to-all: dK/dV of borrowed rows go back to their
owners and are summed into the owners' gradients (a row lent to several ranks gets every contribution).

Attention (`CPShard.attention`). The rank's own whole-document pieces go through `cwm_kernels.packed_attention`
(Triton on CUDA, per-document SDPA on CPU) in one call; the first piece, when it borrowed keys, is attention of
queries at offset P = start - lo into a key range of one document: per query block, SDPA with the
causal-plus-window mask shifted by P. Nothing is recomputed for the borrowed rows (their queries live elsewhere).

Losses. Labels follow their tokens, pre-shifted: `shard_batch` gives each rank `targets` (the label of the next
token of the row, -100 at the last token), so logits at local j pair with targets at local j and no prediction
crosses a rank boundary unpaired. The row's loss is the sum over ranks of their token losses; with FSDP sharded
over the flattened (dp, cp) mesh the trainer's "sum * world / all-reduced loss tokens" stays exact.

Invariants: cuts rise strictly from 0 to T (every rank holds at least one token); all ranks of the group call
the same collectives in the same order (a layer's exchange runs when any rank of the group needs it).
"""
from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cwm.model.config import layer_windows  # noqa: F401  (each layer's window: what the split is balanced for)
from cwm_kernels import packed_attention

Window = int | None  # keys seen per query on a layer, itself included; None: the whole document


def flops_token_cost(config) -> float:
    """Matmul FLOPs per token (projections, SwiGLU MLP, output head) in units of one visible key's attention
    FLOPs (QK and PV: 4 x query heads x head dim), for `balance_cuts(token_cost=...)`: with it the split balances
    the whole forward, not attention alone. 8b preset: ~0.92M, i.e. the matmuls of one token cost as much as
    attending to ~29k keys on each of its 32 layers."""
    d, h = config.hidden_size, config.head_dim
    q, kv, f = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    per_layer = 2 * (d * h * (2 * q + 2 * kv) + 3 * d * f)
    return (config.num_hidden_layers * per_layer + 2 * config.vocab_size * d) / (4 * q * h)


def _bounds(cu_seqlens) -> list[int]:
    cu = [int(x) for x in (cu_seqlens.tolist() if torch.is_tensor(cu_seqlens) else cu_seqlens)]
    if len(cu) < 2 or cu[0] != 0 or any(b < a for a, b in zip(cu, cu[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to T with at least one document; got {cu[:4]}...{cu[-2:]}")
    return cu


def visible_keys(cu_seqlens, windows: Sequence[Window]) -> torch.Tensor:
    """float64 [T]: for each query token, the keys it may see summed over `windows` (one entry per layer).

    Its sum over a token range is that range's unmasked attention area, the quantity the split balances."""
    cu = torch.tensor(_bounds(cu_seqlens), dtype=torch.int64)
    lengths = cu[1:] - cu[:-1]
    seen = (torch.arange(int(cu[-1])) - torch.repeat_interleave(cu[:-1], lengths) + 1).double()  # position + 1
    cost = torch.zeros_like(seen)
    for window, layers in Counter(windows).items():
        cost += layers * (seen if window is None else seen.clamp(max=window))
    return cost


def balance_cuts(cu_seqlens, cp: int, windows: Sequence[Window], *, snap: float = 0.01,
                 token_cost: float = 0.0) -> list[int]:
    """Cut points [0, c_1, ..., T] of `cp` contiguous ranges with equal unmasked area (see module docstring).

    `token_cost` adds a per-token term in units of visible keys (e.g. the MLP's FLOPs per token over the attention
    FLOPs per key, to balance the whole layer instead of attention alone); `snap` (fraction of a share) moves a
    cut onto a document boundary when that unbalances by at most that much."""
    cu = _bounds(cu_seqlens)
    total_tokens = cu[-1]
    if cp < 1 or total_tokens < cp:
        raise ValueError(f"context parallelism {cp} needs a row of at least {cp} tokens (got {total_tokens})")
    if not windows:
        raise ValueError("windows: one entry per attention layer (None for full attention); got none")
    cost = visible_keys(cu, windows) + token_cost
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cost, 0)])
    share = float(prefix[-1]) / cp
    doc_prefix = prefix[torch.tensor(cu)]
    cuts = [0]
    for r in range(1, cp):
        target = r * share
        t = int(torch.searchsorted(prefix, torch.tensor([target], dtype=torch.float64)))
        if t > 0 and target - float(prefix[t - 1]) <= float(prefix[min(t, total_tokens)]) - target:
            t -= 1
        d = int(torch.searchsorted(doc_prefix, torch.tensor([target], dtype=torch.float64)))
        near = [cu[i] for i in (d - 1, d) if 0 <= i < len(cu)]
        best = min(near, key=lambda b: abs(float(prefix[b]) - target))
        if abs(float(prefix[best]) - target) <= snap * share:
            t = best
        cuts.append(min(max(t, cuts[-1] + 1), total_tokens - (cp - r)))
    cuts.append(total_tokens)
    return cuts


@dataclasses.dataclass(frozen=True)
class ExchangePlan:
    """What one rank sends and receives on layers of one window. Rows are tokens; `send_index` is local."""

    lo: int                  # this rank borrows global rows [lo, start)
    send_index: torch.Tensor  # int64 local rows sent, grouped by destination rank in rank order
    send_splits: list[int]
    recv_splits: list[int]   # rows received from each rank (only lower ranks send), in global order
    any_exchange: bool       # some rank of the group borrows: every rank must join the collective


def borrowed_range(cu: list[int], cuts: list[int], rank: int, window: Window) -> tuple[int, int]:
    """Global rows [lo, start) of keys that `rank`'s queries may see but other ranks hold."""
    start = cuts[rank]
    doc_start = cu[bisect.bisect_right(cu, start) - 1]
    lo = doc_start if window is None else max(doc_start, start - window + 1)
    return lo, start


def exchange_plan(cu: list[int], cuts: list[int], rank: int, window: Window) -> ExchangePlan:
    cp = len(cuts) - 1
    needs = [borrowed_range(cu, cuts, r, window) for r in range(cp)]
    send_rows, send_splits = [], []
    for lo, hi in needs:  # what this rank's range [cuts[rank], cuts[rank+1]) holds of each rank's borrowed range
        a, b = max(lo, cuts[rank]), min(hi, cuts[rank + 1])
        send_rows.append(torch.arange(a - cuts[rank], b - cuts[rank]) if b > a else torch.empty(0, dtype=torch.int64))
        send_splits.append(max(0, b - a))
    lo, hi = needs[rank]
    recv_splits = [max(0, min(hi, cuts[q + 1]) - max(lo, cuts[q])) for q in range(cp)]
    return ExchangePlan(lo, torch.cat(send_rows), send_splits, recv_splits, any(b > a for a, b in needs))


class KVExchange(torch.autograd.Function):
    """kv [S, Hkv, 2D] local -> [sum(recv_splits), Hkv, 2D] borrowed rows; backward returns their grads to owners."""

    @staticmethod
    def forward(ctx, kv, send_index, send_splits, recv_splits, group):
        send = kv.index_select(0, send_index.to(kv.device)).contiguous()
        recv = kv.new_empty((sum(recv_splits), *kv.shape[1:]))
        dist.all_to_all_single(recv, send, recv_splits, send_splits, group=group)
        ctx.save_for_backward(send_index)
        ctx.rows, ctx.send_splits, ctx.recv_splits, ctx.group = kv.shape[0], send_splits, recv_splits, group
        return recv

    @staticmethod
    def backward(ctx, grad_recv):
        (send_index,) = ctx.saved_tensors
        grad_send = grad_recv.new_empty((sum(ctx.send_splits), *grad_recv.shape[1:]))
        dist.all_to_all_single(grad_send, grad_recv.contiguous(), ctx.send_splits, ctx.recv_splits, group=ctx.group)
        grad = grad_recv.new_zeros((ctx.rows, *grad_recv.shape[1:]))
        grad.index_add_(0, send_index.to(grad.device), grad_send)
        return grad, None, None, None, None


def offset_attention(q, k, v, offset: int, window: Window, scale: float | None, block: int = 2048) -> torch.Tensor:
    """Queries q [L, Hq, D] are rows offset..offset+L-1 of one document's key range k/v [offset+L, Hkv, D].

    Query i (row offset+i) sees key j iff j <= offset+i and, windowed, j > offset+i-window. Computed per block of
    queries over only the keys that block may see, so memory is O(block x keys), not O(L x keys)."""
    length = q.shape[0]
    gqa = q.shape[1] != k.shape[1]
    pieces = []
    for a in range(0, length, block):
        b = min(length, a + block)
        lo = 0 if window is None else max(0, offset + a - window + 1)
        hi = offset + b
        rows = torch.arange(offset + a, offset + b, device=q.device)[:, None]
        cols = torch.arange(lo, hi, device=q.device)[None, :]
        mask = cols <= rows
        if window is not None:
            mask &= cols > rows - window
        out = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[lo:hi].transpose(0, 1),
                                             v[lo:hi].transpose(0, 1), attn_mask=mask, scale=scale, enable_gqa=gqa)
        pieces.append(out.transpose(0, 1))
    return torch.cat(pieces, 0)


class CPShard:
    """One rank's share [start, end) of a packed row and the plans to attend across the CP group.

    Pass it to a "cwm_packed" model as the keyword `cp_shard` (it reaches the attention function through
    transformers' kwargs) with this rank's `input_ids`/`position_ids` from `shard_batch`."""

    def __init__(self, cu_seqlens, cuts: Sequence[int], rank: int, group=None):
        self.cu = _bounds(cu_seqlens)
        self.cuts = [int(c) for c in cuts]
        if self.cuts[0] != 0 or self.cuts[-1] != self.cu[-1] or any(b <= a for a, b in zip(self.cuts, self.cuts[1:])):
            raise ValueError(f"cuts must rise strictly from 0 to T={self.cu[-1]}; got {self.cuts}")
        self.rank, self.group = rank, group
        self.start, self.end = self.cuts[rank], self.cuts[rank + 1]
        # Local documents: the row's boundaries inside [start, end), with the range's own ends.
        inner = [c - self.start for c in self.cu if self.start < c < self.end]
        self.local_cu = [0, *inner, self.end - self.start]
        self.first_len = self.local_cu[1]
        self._plans: dict[Window, ExchangePlan] = {}
        self._cu_tensors: dict[tuple, tuple[torch.Tensor, int]] = {}

    @property
    def cp(self) -> int:
        return len(self.cuts) - 1

    def plan(self, window: Window) -> ExchangePlan:
        if window not in self._plans:
            self._plans[window] = exchange_plan(self.cu, self.cuts, self.rank, window)
        return self._plans[window]

    def _cu(self, first: int, device) -> tuple[torch.Tensor, int]:
        """cu_seqlens (int32 on `device`) and max length of the local documents from index `first` on."""
        key = (first, str(device))
        if key not in self._cu_tensors:
            base = self.local_cu[first]
            cu = [c - base for c in self.local_cu[first:]]
            self._cu_tensors[key] = (torch.tensor(cu, dtype=torch.int32, device=device),
                                     max(b - a for a, b in zip(cu, cu[1:])))
        return self._cu_tensors[key]

    def attention(self, q, k, v, window: Window, scale: float | None, backend: str = "auto") -> torch.Tensor:
        """q [S, Hq, D], k/v [S, Hkv, D] of this rank's tokens -> [S, Hq, D]; same rows as unsplit attention."""
        plan = self.plan(window)
        recv = None
        if plan.any_exchange:
            kv = torch.cat([k, v], dim=-1)
            recv = KVExchange.apply(kv, plan.send_index, plan.send_splits, plan.recv_splits, self.group)
        if self.start == plan.lo:
            out = self.local_attention(q, k, v, None, None, window, scale, backend)
            # Lenders that borrow nothing still join the backward all-to-all: keep the (empty) received rows in
            # the graph, or autograd would never call KVExchange.backward here and the other ranks would hang.
            return out if recv is None else out + recv.sum()
        head_dim = k.shape[-1]
        return self.local_attention(q, k, v, recv[..., :head_dim], recv[..., head_dim:], window, scale, backend)

    def local_attention(self, q, k, v, borrowed_k, borrowed_v, window: Window, scale: float | None,
                        backend: str = "auto") -> torch.Tensor:
        """This rank's attention given the borrowed rows [lo, start) (None when it borrows none): no communication.
        `attention` calls it after the exchange; benchmarks time it per rank in one process."""
        if borrowed_k is None or borrowed_k.shape[0] == 0:
            cu, max_len = self._cu(0, q.device)
            return packed_attention(q, k, v, cu, max_len, window=window, scale=scale, backend=backend)
        n = self.first_len
        keys, values = torch.cat([borrowed_k, k[:n]], 0), torch.cat([borrowed_v, v[:n]], 0)
        first = offset_attention(q[:n], keys, values, borrowed_k.shape[0], window, scale)
        if n == q.shape[0]:
            return first
        cu, max_len = self._cu(1, q.device)
        rest = packed_attention(q[n:], k[n:], v[n:], cu, max_len, window=window, scale=scale, backend=backend)
        return torch.cat([first, rest], 0)

    def exchanged_rows(self, windows: Sequence[Window]) -> int:
        """K/V rows this rank receives in one forward over layers with `windows` (the same go back in backward)."""
        return sum(self.start - self.plan(w).lo for w in windows)


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """[1, T] labels -> [1, T] targets: targets[j] = labels[j + 1] (what logits at j predict), -100 at the end."""
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


def shard_batch(batch: dict, cp: int, rank: int, windows: Sequence[Window], group=None, **balance) -> tuple[dict, CPShard]:
    """This rank's part of a `make_batch` row: tokens, positions and next-token targets of [start, end).

    Returns (local batch, shard). The local batch has `input_ids`, `position_ids`, `labels` (this range's labels),
    `targets` (next-token labels of this range's tokens), `source_ids`/`target_source_ids` when present, and
    `cp_shard`; every rank of the group gets the same cuts (they depend on cu_seqlens only)."""
    if batch["input_ids"].shape[0] != 1:
        raise ValueError(f"context parallelism splits one packed row [1, T]; got input_ids {tuple(batch['input_ids'].shape)}")
    cu = _bounds(batch["cu_seqlens"])
    shard = CPShard(cu, balance_cuts(cu, cp, windows, **balance), rank, group)
    sl = slice(shard.start, shard.end)
    local = {"input_ids": batch["input_ids"][:, sl], "position_ids": batch["position_ids"][:, sl],
             "labels": batch["labels"][:, sl], "targets": next_token_targets(batch["labels"])[:, sl],
             "cp_shard": shard}
    if "source_ids" in batch:
        local["source_ids"] = batch["source_ids"][:, sl]
        local["target_source_ids"] = next_token_targets(batch["source_ids"])[:, sl]
    return local, shard
