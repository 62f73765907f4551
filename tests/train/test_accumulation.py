"""Gradient accumulation (`--training.batch_tokens`): the gradients of micro-batches accumulated by the trainer
equal those of one batch holding every row; and the per-document FLOPs count that MFU uses."""
from __future__ import annotations

import itertools

import torch


def _model(tokenizer):
    from transformers import CwmForCausalLM

    from cwm.model.attention import register
    from cwm.model.config import build_config

    register()
    torch.manual_seed(0)
    return CwmForCausalLM._from_config(build_config(tokenizer, seq_len=64), attn_implementation="cwm_packed")


def _one_row(rows: list[dict]) -> dict:
    """The rows back to back as one packed row: the single big batch."""
    cat = {k: torch.cat([r[k] for r in rows], dim=1) for k in ("input_ids", "labels", "position_ids", "source_ids")}
    offsets = list(itertools.accumulate([0] + [r["input_ids"].shape[1] for r in rows[:-1]]))
    cu = torch.cat([rows[0]["cu_seqlens"][:1]] + [r["cu_seqlens"][1:] + o for r, o in zip(rows, offsets)])
    return {**cat, "cu_seqlens": cu.to(torch.int32), "max_seqlen": max(int(r["max_seqlen"]) for r in rows)}


def test_accumulated_gradients_equal_one_big_batch(corpus, jsonl_recipe):
    from cwm.data.loader import PackedLoader
    from cwm.data.recipe import load_recipe
    from cwm.data.tokenizer import load_tokenizer
    from cwm.train import accumulate_gradients

    recipe = load_recipe(jsonl_recipe(seq_len=64))
    rows = list(itertools.islice(iter(PackedLoader(recipe, recipe.tokenizer)), 3))
    model = _model(load_tokenizer(recipe.tokenizer))

    stats = accumulate_gradients(model, rows, chunk_size=16)
    accumulated = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, [_one_row(rows)], chunk_size=16)
    for name, p in model.named_parameters():
        torch.testing.assert_close(accumulated[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)

    # Oracle for the normalisation: the mean cross entropy over every labelled token, with full logits.
    model.zero_grad(set_to_none=True)
    big = _one_row(rows)
    logits = model(input_ids=big["input_ids"], position_ids=big["position_ids"], cu_seq_lens_q=big["cu_seqlens"],
                   cu_seq_lens_k=big["cu_seqlens"], max_length_q=big["max_seqlen"], max_length_k=big["max_seqlen"]).logits
    torch.nn.functional.cross_entropy(logits[0, :-1], big["labels"][0, 1:], ignore_index=-100).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(accumulated[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert sum(int(mask.sum()) for _, mask, _ in stats) == int((big["labels"][0, 1:] != -100).sum())


def test_flops_count_each_document_and_window_not_the_row():
    from transformers import CwmConfig

    from cwm.model.config import flops_per_row

    config = CwmConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, sliding_window=8, vocab_size=100,
                       layer_types=["sliding_attention"] * 3 + ["full_attention"])
    heads_dim = 4 * 16
    # Brute force: every (query, key) pair the packed kernel computes, layer by layer.
    docs = [5, 20, 1]
    pairs = 0
    for window in (8, 8, 8, None):
        for n in docs:
            pairs += sum(1 for i in range(n) for j in range(n) if j <= i and (window is None or i - j < window))
    want = 6.0 * 1000 * sum(docs) + 12.0 * heads_dim * pairs
    assert flops_per_row(config, 1000, docs) == want
    # The same tokens as one document cost more attention: the row is not charged as one sequence.
    assert flops_per_row(config, 1000, [26]) > want


def test_real_documents_and_matmul_parameters_of_the_mfu_count():
    """The two inputs of the logged MFU besides the kernel count: a row's real documents (the trailing padding
    document is not work) and the matrices that multiply activations (a tied output head still multiplies)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cwm.model.config import matmul_parameters
    from cwm.train import _doc_lengths

    source_ids = torch.tensor([[0] * 5 + [1] * 20 + [0] + [-1] * 6])
    assert _doc_lengths({"cu_seqlens": torch.tensor([0, 5, 25, 26, 32]), "source_ids": source_ids}) == [5, 20, 1]
    counts = []
    for tied in (True, False):
        config = Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
        model = Qwen2ForCausalLM(config)
        counts.append(matmul_parameters(model, config))
    by_hand = 16 * 16 * 2 + 16 * 8 * 2 + 3 * 16 * 32 + 50 * 16  # q, o; k, v; the MLP; the output head
    assert counts == [by_hand, by_hand]
