"""Context-parallel split quality on CPU: per-rank attention work and K/V traffic for realistic packed rows.

Rows: the packing benchmark's lognormal length mix (benchmarks/conftest.py) packed by best-fit-decreasing with
CWM's length buckets into 32k and 128k rows (`cwm.data.packing.pack_stream`), as the trainer packs them.
Layers: CWM's pattern, three sliding-window layers (window 8192) per full layer, 8b preset shapes for bytes
(32 layers, 8 KV heads, head dim 128, bf16).

Work of a rank = its unmasked attention area (for each of its query tokens, the keys it sees, summed over layers;
`visible_keys`, checked against the dense mask in tests/train/test_context_parallel.py). Reported: max/mean over
ranks (1.00 = perfect), the mean over rows and the worst row, for four splits measured on the same rows:
- contiguous, equal tokens: cut the row into `cp` equal token ranges (the naive split);
- head-tail, equal tokens: 2·cp equal chunks, rank r takes chunks r and 2cp-1-r (the load balancer of
  torchtitan's and Megatron's context parallelism, built for one causal sequence);
- documents by token count: whole documents to the rank holding the fewest tokens, longest first, a document
  longer than a share first cut into share-sized pieces (token-count balancing);
- contiguous by area: `cwm.model.context_parallel.balance_cuts` (this toolkit).
Traffic: K/V bytes each forward receives, summed over ranks and layers, for `balance_cuts` + `CPShard`'s exchange
plan against all-gathering the whole row's K/V on every layer (what ring or all-gather CP without document
awareness moves). The backward moves the same bytes again in both schemes (dK/dV back to owners / reduce-scatter).
"""
from __future__ import annotations

import itertools
import time

import pytest
import torch

from cwm.data.packing import CWM_BUCKETS, Document, pack_stream
from cwm.model.context_parallel import CPShard, balance_cuts, flops_token_cost, visible_keys

ROW_LENS = (32_768, 131_072)
CPS = (2, 4, 8)
ROWS = 200
LAYERS, KV_HEADS, HEAD_DIM, BYTES = 32, 8, 128, 2  # 8b preset, bf16
WINDOWS = [8192, 8192, 8192, None] * (LAYERS // 4)
KV_BYTES_PER_TOKEN_LAYER = 2 * KV_HEADS * HEAD_DIM * BYTES  # k and v


def token_cost_8b() -> float:
    from transformers import CwmConfig

    from cwm.model.config import PRESETS

    shape = {k: v for k, v in PRESETS["8b"].items() if k != "rope_theta"}
    return flops_token_cost(CwmConfig(**shape))


def packed_rows(lengths, row_len, n_rows):
    docs = (Document(range(n), source=str(i)) for i, n in enumerate(lengths))
    rows = itertools.islice(pack_stream(docs, row_len, buffer_size=1024, buckets=CWM_BUCKETS), n_rows)
    return [[len(d) for d in row] for row in rows]


def ratio(work: torch.Tensor) -> float:
    return float(work.max() / work.mean())


def contiguous(prefix, cuts):
    return torch.stack([prefix[b] - prefix[a] for a, b in zip(cuts, cuts[1:])])


def head_tail(prefix, total, cp):
    edges = [round(i * total / (2 * cp)) for i in range(2 * cp + 1)]
    chunk = [prefix[edges[i + 1]] - prefix[edges[i]] for i in range(2 * cp)]
    return torch.stack([chunk[r] + chunk[2 * cp - 1 - r] for r in range(cp)])


def by_token_count(cost, cu, cp):
    share = -(-int(cu[-1]) // cp)
    pieces = []  # (tokens, area)
    for a, b in zip(cu, cu[1:]):
        for s in range(a, b, share):
            e = min(b, s + share)
            pieces.append((e - s, float(cost[s:e].sum())))
    tokens, work = [0] * cp, [0.0] * cp
    for n, area in sorted(pieces, reverse=True):
        r = min(range(cp), key=tokens.__getitem__)
        tokens[r] += n
        work[r] += area
    return torch.tensor(work)


@pytest.mark.parametrize("row_len", ROW_LENS)
def test_cp_split_balance_and_traffic(row_len, doc_lengths, show_table):
    probe = doc_lengths(10_000, seed=0)
    n_docs = int(1.3 * ROWS * row_len / (sum(probe) / len(probe)))
    rows = packed_rows(doc_lengths(n_docs, seed=1), row_len, ROWS)
    methods = ["contiguous, equal tokens", "head-tail, equal tokens", "documents by token count", "contiguous by area"]
    stats = {(cp, m): [] for cp in CPS for m in methods}
    tokens_ratio = {cp: [] for cp in CPS}
    traffic = {cp: [0, 0] for cp in CPS}  # [exchange plan, all-gather] bytes summed over rows
    on_boundary = {cp: [0, 0] for cp in CPS}
    split_seconds = []
    per_token = token_cost_8b()
    flops_methods = ["contiguous, equal tokens", "contiguous by area", "contiguous by area + matmul FLOPs"]
    flops = {(cp, m): [] for cp in CPS for m in flops_methods}
    flops_tokens = {cp: [] for cp in CPS}
    for lengths in rows:
        cu = [0, *itertools.accumulate(lengths)]
        total = cu[-1]
        cost = visible_keys(cu, WINDOWS)
        prefix = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cost, 0)])
        for cp in CPS:
            start = time.perf_counter()
            cuts = balance_cuts(cu, cp, WINDOWS)
            split_seconds.append(time.perf_counter() - start)
            stats[(cp, methods[0])].append(ratio(contiguous(prefix, [round(r * total / cp) for r in range(cp + 1)])))
            stats[(cp, methods[1])].append(ratio(head_tail(prefix, total, cp)))
            stats[(cp, methods[2])].append(ratio(by_token_count(cost, cu, cp)))
            stats[(cp, methods[3])].append(ratio(contiguous(prefix, cuts)))
            tokens_ratio[cp].append(ratio(torch.tensor([b - a for a, b in zip(cuts, cuts[1:])], dtype=torch.float64)))
            rows_moved = sum(CPShard(cu, cuts, r).exchanged_rows(WINDOWS) for r in range(cp))
            traffic[cp][0] += rows_moved * KV_BYTES_PER_TOKEN_LAYER
            traffic[cp][1] += (cp - 1) * total * LAYERS * KV_BYTES_PER_TOKEN_LAYER
            on_boundary[cp][0] += sum(c in set(cu) for c in cuts[1:-1])
            on_boundary[cp][1] += cp - 1
            # Whole-forward FLOPs (attention area + matmuls per token), in visible-key units.
            whole = prefix + per_token * torch.arange(total + 1, dtype=torch.float64)
            flop_cuts = balance_cuts(cu, cp, WINDOWS, token_cost=per_token)
            for m, c in zip(flops_methods, ([round(r * total / cp) for r in range(cp + 1)], cuts, flop_cuts)):
                flops[(cp, m)].append(ratio(contiguous(whole, c)))
            flops_tokens[cp].append(ratio(torch.tensor([b - a for a, b in zip(flop_cuts, flop_cuts[1:])], dtype=torch.float64)))
    long_rows = sum(max(lengths) > row_len // 8 for lengths in rows)
    show_table(
        f"CP split balance, {len(rows)} rows of {row_len} tokens (lognormal mix, BFD + CWM buckets; "
        f"{long_rows} rows hold a document longer than {row_len // 8} tokens); max/mean per-rank unmasked area, "
        f"mean over rows / worst row",
        ["CP", *methods, "area split: tokens max/mean (mean / worst)"],
        [[cp, *[f"{sum(stats[(cp, m)]) / len(rows):.3f} / {max(stats[(cp, m)]):.3f}" for m in methods],
          f"{sum(tokens_ratio[cp]) / len(rows):.2f} / {max(tokens_ratio[cp]):.2f}"] for cp in CPS],
    )
    show_table(
        f"CP K/V traffic per step (forward), {row_len}-token rows, 8b shapes (32 layers, 8 KV heads x 128, bf16): "
        f"mean per row",
        ["CP", "exchange plan (MB)", "all-gather whole row (MB)", "plan / all-gather", "cuts on a document boundary"],
        [[cp, f"{traffic[cp][0] / len(rows) / 1e6:,.1f}", f"{traffic[cp][1] / len(rows) / 1e6:,.1f}",
          f"{traffic[cp][0] / traffic[cp][1]:.4f}", f"{on_boundary[cp][0]}/{on_boundary[cp][1]}"] for cp in CPS],
    )
    show_table(
        f"CP split, whole forward: max/mean per-rank FLOPs (attention area + matmuls, 8b preset: one token's matmuls "
        f"= {per_token:,.0f} visible keys), {row_len}-token rows, mean over rows / worst row",
        ["CP", *flops_methods, "area + FLOPs split: tokens max/mean (mean / worst)"],
        [[cp, *[f"{sum(flops[(cp, m)]) / len(rows):.3f} / {max(flops[(cp, m)]):.3f}" for m in flops_methods],
          f"{sum(flops_tokens[cp]) / len(rows):.2f} / {max(flops_tokens[cp]):.2f}"] for cp in CPS],
    )
    split_seconds.sort()
    print(f"balance_cuts: median {split_seconds[len(split_seconds) // 2] * 1e3:.2f} ms per row of {row_len} tokens")
    for cp in CPS:
        ours = stats[(cp, methods[3])]
        assert max(ours) <= 1.03, f"area split off balance at CP {cp}: worst row {max(ours):.3f}"
        for m in methods[:3]:
            assert sum(ours) <= sum(stats[(cp, m)]), f"{m} beat the area split at CP {cp}"
        assert traffic[cp][0] < traffic[cp][1]
        assert max(flops[(cp, flops_methods[2])]) <= 1.03

