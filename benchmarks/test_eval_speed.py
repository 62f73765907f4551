"""In-training trace generation: the evaluator's batched `generate` (KV cache, 8 prompts per forward,
cwm/eval/world_model.py) against the loop it replaced, measured in the same run on the same prompts and model:
one prompt at a time, one token per forward, a host sync (`int(argmax)`) per token (the pre-issue-20 evaluator).

Model: the 'tiny' preset (random weights: every continuation runs to the token budget), prompts: the bundled
CRUXEval-format sample traced (context + entry call frame), 64 new tokens each, greedy, CPU fp32.
"""
from __future__ import annotations

import inspect
import platform
import time

import pytest
import torch


NEW_TOKENS = 64


def one_at_a_time(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The baseline: the old `WorldModelEval.generate_trace` loop (DynamicCache, batch 1, a sync per token)."""
    from transformers import DynamicCache

    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache, out = DynamicCache(), []
    x = torch.tensor([prompt])
    position = torch.arange(len(prompt))[None]
    for _ in range(max_new_tokens):
        logits = model(input_ids=x, position_ids=position, use_cache=True, **{cache_arg: cache}).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
        x = torch.tensor([[token]])
        position = position[:, -1:] + 1
    return out


@pytest.mark.slow
def test_batched_trace_generation_against_one_prompt_at_a_time(tmp_path):
    from transformers import CwmForCausalLM

    from cwm.data.tokenizer import train_bpe
    from cwm.eval.cli import SAMPLES, traced_examples
    from cwm.eval.trace_text import prompt_end
    from cwm.eval.world_model import TraceExample, WorldModelEval
    from cwm.model.config import build_config

    torch.set_num_threads(1)
    examples = traced_examples(str(SAMPLES / "cruxeval.jsonl"), 2, None)
    tok = train_bpe([e["text"] for e in examples] * 3, 512, tmp_path / "tok")
    torch.manual_seed(0)
    model = CwmForCausalLM._from_config(build_config(tok, preset="tiny", seq_len=1024),
                                        attn_implementation="sdpa").eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    evaluator = WorldModelEval(tok, [TraceExample(e["text"], e["value"], e["raised"]) for e in examples],
                               max_len=1024, max_new_tokens=NEW_TOKENS, batch_size=8)
    prompts = [evaluator.encode(e["text"][:prompt_end(e["text"])]) for e in examples] + \
              [evaluator.encode(e["text"][:prompt_end(e["text"])]) for e in examples[:3]]   # 16 prompts
    with torch.no_grad():
        t0 = time.perf_counter()
        base = [one_at_a_time(model, p, NEW_TOKENS) for p in prompts]
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = []
        for i in range(0, len(prompts), 8):
            batched += evaluator.generate_traces(model, prompts[i:i + 8], torch.device("cpu"))
        t_new = time.perf_counter() - t0
    # the same greedy tokens where the entry-return stop did not end a row early
    same = sum(b[:len(n)] == n for b, n in zip(base, batched))
    tokens = sum(len(n) for n in batched)
    print(f"\n{platform.machine()}, 1 torch thread, torch {torch.__version__}: {len(prompts)} trace prompts ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), "
          f"{tokens} new tokens: one at a time {t_base:.2f} s ({tokens / t_base:.0f} tok/s), batched x8 "
          f"{t_new:.2f} s ({tokens / t_new:.0f} tok/s): {t_base / t_new:.2f}x; same tokens in {same}/{len(prompts)}")
    assert same >= len(prompts) - 1
    assert t_new < t_base
