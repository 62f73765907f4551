"""The "cwm_packed" attention implementation for transformers models (CwmForCausalLM and its kin).

`register()` adds it to `transformers.AttentionInterface`; build the model with
`attn_implementation="cwm_packed"` and call it on a packed row with `position_ids` (restarting at 0 in each
document) and, optionally, the FlashAttentionKwargs `cu_seq_lens_q/cu_seq_lens_k/max_length_q/max_length_k`.

No mask function is registered on purpose: for an implementation missing from `AttentionMaskInterface`,
transformers' `create_causal_mask` returns None at once, so no dense T x T mask is ever built. Document
boundaries come from cu_seqlens (or position_ids), and each layer's window from the `sliding_window` kwarg that
`CwmAttention` passes (None on full-attention layers). On a GPU pass cu_seq_lens and max_length (see
`model_inputs`): deriving them from position_ids costs a host sync in every layer.
"""

from __future__ import annotations

import torch

from cwm_kernels import packed_attention

NAME = "cwm_packed"
# "auto": Triton on CUDA, per-document SDPA on CPU; "triton"/"torch" force one (see cwm_kernels.packed_attention).
BACKEND = "auto"


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Document boundaries of the flattened [B*S] tokens: a document starts at every position 0 and every row start."""
    batch, seq = position_ids.shape
    starts = position_ids == 0
    starts[:, 0] = True
    idx = torch.nonzero(starts.reshape(-1), as_tuple=True)[0]
    total = torch.tensor([batch * seq], device=idx.device, dtype=idx.dtype)
    cu = torch.cat([idx, total]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def model_inputs(batch: dict) -> dict:
    """Keyword arguments for a "cwm_packed" model from a `cwm.data.packing.make_batch` batch (labels included)."""
    cu, max_len = batch["cu_seqlens"], int(batch["max_seqlen"])
    return {
        "input_ids": batch["input_ids"], "labels": batch["labels"], "position_ids": batch["position_ids"],
        "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_len, "max_length_k": max_len,
    }


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention signature: query [B, Hq, S, D], key/value [B, Hkv, S, D] -> ([B, S, Hq, D], None)."""
    if dropout:
        raise ValueError(f"{NAME} attention has no dropout; set attention_dropout=0 (got {dropout})")
    if attention_mask is not None:
        raise ValueError(f"{NAME} attention takes document boundaries from cu_seq_lens/position_ids, not a 4-D mask")
    if key.shape[2] != query.shape[2]:
        raise ValueError(f"{NAME} attention is for training on packed rows; no KV cache (q {query.shape[2]}, kv {key.shape[2]} tokens)")
    if cu_seq_lens_k is not None and cu_seq_lens_q is not None and cu_seq_lens_k is not cu_seq_lens_q:
        if not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
            raise ValueError(f"{NAME} attention is self-attention: cu_seq_lens_q and cu_seq_lens_k must match")
    batch, num_q_heads, seq, head_dim = query.shape
    cp_shard = kwargs.get("cp_shard")  # a cwm.model.context_parallel.CPShard: this rank's share of a CP-split row
    if cp_shard is not None:
        q, k, v = (x.transpose(1, 2).reshape(seq, x.shape[1], head_dim) for x in (query, key, value))
        out = cp_shard.attention(q, k, v, sliding_window, scaling, backend=BACKEND)
        return out.reshape(batch, seq, num_q_heads, head_dim), None
    if cu_seq_lens_q is not None:
        cu = cu_seq_lens_q.to(torch.int32)
        max_len = int(max_length_q) if max_length_q is not None else int((cu[1:] - cu[:-1]).max())
    elif position_ids is not None:
        cu, max_len = cu_seqlens_from_position_ids(position_ids.expand(batch, -1))
    else:  # one document per row
        cu = torch.arange(0, batch * seq + 1, seq, device=query.device, dtype=torch.int32)
        max_len = seq
    q, k, v = (x.transpose(1, 2).reshape(batch * seq, x.shape[1], head_dim) for x in (query, key, value))
    out = packed_attention(q, k, v, cu.to(query.device), max_len, window=sliding_window, scale=scaling,
                           backend=BACKEND)
    return out.reshape(batch, seq, num_q_heads, head_dim), None


def register() -> str:
    """Make `attn_implementation="cwm_packed"` available to every transformers model; returns the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention_forward)
    return NAME
