"""Training-step throughput on a packed row: `cwm_packed` attention against transformers' stock `sdpa` (which
builds a dense block-diagonal mask from position_ids) and `eager`, same model, same row, same process.

    pytest benchmarks/test_train_speed.py --benchmark-columns=mean,stddev

The baselines cost what ignoring the packing costs: for this model they attend across the documents of the row
(tests/train/test_model.py shows it), so they are speed references, not equivalent alternatives.
Prints tokens/s per implementation and the ratio to `sdpa`; on CPU the packed path is per-document SDPA,
on CUDA the Triton kernel. The row mixes long and short documents like a trace/code mix.
"""
from __future__ import annotations

import random

import pytest
import torch

SEQ_LEN = 2048
IMPLEMENTATIONS = ("sdpa", "cwm_packed", "eager")  # sdpa first: the baseline of the ratios
_tokens_per_s: dict[str, float] = {}


def _row(vocab: int):
    from cwm.data.packing import Document, make_batch

    rng = random.Random(0)
    lengths, used = [], 0
    while used < SEQ_LEN - 64:
        n = min(rng.choice([40, 120, 300, 700]), SEQ_LEN - used)
        lengths.append(n)
        used += n
    docs = [Document([rng.randrange(16, vocab) for _ in range(n)]) for n in lengths]
    return make_batch(docs, SEQ_LEN, pad_id=2)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_train_step_tokens_per_s(benchmark, implementation):
    from transformers import CwmConfig, CwmForCausalLM

    from cwm.model.attention import register

    register()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = CwmConfig(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=256,
                       max_position_embeddings=SEQ_LEN, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
    with torch.device(device):
        model = CwmForCausalLM._from_config(config, attn_implementation=implementation)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in _row(config.vocab_size).items()}
    cu = batch["cu_seqlens"]

    def step():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                    cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=batch["max_seqlen"], max_length_k=batch["max_seqlen"])
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    _tokens_per_s[implementation] = SEQ_LEN / benchmark.stats.stats.mean
    base = _tokens_per_s.get("sdpa")
    ratio = f", {_tokens_per_s[implementation] / base:.2f}x sdpa" if base else ""
    print(f"\n{implementation} on {device.type}: {_tokens_per_s[implementation]:,.0f} tokens/s per training step{ratio}")
