"""The trainer's packed forward equals running every document alone (the oracle: no packing at all), and the
stock transformers path it replaces does not (its attention crosses document boundaries in a packed row)."""
from __future__ import annotations

import copy
import random

import torch


def _losses(implementation):
    from transformers import CwmConfig, CwmForCausalLM

    from cwm.data.packing import Document, make_batch
    from cwm.model.attention import register
    from cwm.train import token_losses

    register()
    torch.manual_seed(0)
    config = CwmConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16,
                       max_position_embeddings=256, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
    # Separate config objects: _from_config sets the attention implementation on the config it is given.
    model = CwmForCausalLM._from_config(copy.deepcopy(config), attn_implementation=implementation).eval()
    alone = CwmForCausalLM._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    alone.load_state_dict(model.state_dict())
    rng = random.Random(0)
    docs = [Document([rng.randrange(3, 128) for _ in range(n)], [rng.random() < 0.8 for _ in range(n)])
            for n in (40, 7, 25, 3, 30)]  # 40 and 30 exceed the 16-token window of the sliding layers
    batch = make_batch(docs, 120, pad_id=2)
    batch["source_ids"] = torch.zeros_like(batch["input_ids"])
    with torch.no_grad():
        _, losses, mask, _ = token_losses(model, batch, autocast=False, chunk_size=32)
        expected = []
        for doc in docs:
            ids = torch.tensor([doc.input_ids])
            logits = alone(input_ids=ids).logits[0, :-1]
            per_token = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            expected.append(per_token[torch.tensor(doc.loss_mask[1:])])
    return losses[mask], torch.cat(expected)


def test_packed_row_loss_equals_documents_run_alone():
    packed, alone = _losses("cwm_packed")
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)


def test_stock_sdpa_leaks_across_documents():
    """Why the trainer uses `cwm_packed`: transformers' sdpa path, given the same row, lets documents see each other."""
    packed, alone = _losses("sdpa")
    assert (packed - alone).abs().max() > 1e-2
