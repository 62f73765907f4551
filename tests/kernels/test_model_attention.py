"""End to end: a tiny CwmForCausalLM with attn_implementation="cwm_packed" on one packed row gives the same
logits as the stock eager attention run on each document alone (sliding and full layers, a 3-token window)."""

import pytest
import torch
from transformers import CwmConfig, CwmForCausalLM

from cwm.data.packing import Document, make_batch
from cwm.model import attention

LENGTHS = [5, 9, 1, 7]  # documents longer and shorter than the window; one of a single token
CONFIG = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, sliding_window=3, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)


@pytest.fixture(scope="module")
def models_and_docs():
    attention.register()
    torch.manual_seed(0)
    packed = CwmForCausalLM(CwmConfig(**CONFIG, attn_implementation="cwm_packed")).eval()
    eager = CwmForCausalLM(CwmConfig(**CONFIG, attn_implementation="eager")).eval()
    eager.load_state_dict(packed.state_dict())
    docs = [torch.randint(3, 64, (n,)) for n in LENGTHS]
    return packed, eager, docs


def per_document_logits(eager, docs):
    with torch.no_grad():
        return torch.cat([eager(input_ids=d[None]).logits[0] for d in docs])


@pytest.mark.parametrize("backend,boundaries", [
    ("torch", "cu_seq_lens"), ("torch", "position_ids"), ("triton", "cu_seq_lens"),  # interpreter: one is enough
])
def test_packed_row_logits_equal_per_document_logits(models_and_docs, monkeypatch, backend, boundaries):
    if backend == "triton":
        from cwm_kernels.attention_fwd import INTERPRETED

        if not INTERPRETED and not torch.cuda.is_available():
            pytest.skip("no CUDA and kernels not in interpreter mode: run tests/kernels on its own")
    packed, eager, docs = models_and_docs
    monkeypatch.setattr(attention, "BACKEND", backend)
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"  # compiled kernels need CUDA
    row_len = sum(LENGTHS) + 3  # the row ends in a padding document of its own
    batch = make_batch([Document(d.tolist()) for d in docs], row_len, pad_id=0)
    if boundaries == "cu_seq_lens":
        kwargs = attention.model_inputs(batch)
    else:
        kwargs = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
    kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    try:
        with torch.no_grad():
            logits = packed.to(device)(**kwargs).logits[0, : sum(LENGTHS)].cpu()
    finally:
        packed.to("cpu")
    expected = per_document_logits(eager, docs)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_without_document_boundaries_documents_would_mix(models_and_docs):
    """Guards the test above: the same row through eager attention (one causal sequence) gives other logits."""
    _, eager, docs = models_and_docs
    with torch.no_grad():
        mixed = eager(input_ids=torch.cat(docs)[None]).logits[0]
    assert (mixed - per_document_logits(eager, docs)).abs().max() > 1e-2


def test_gradients_equal_per_document_gradients(models_and_docs, monkeypatch):
    """Training on a packed row gives the parameters the gradient of the per-document losses (CPU path)."""
    packed, eager, docs = models_and_docs
    monkeypatch.setattr(attention, "BACKEND", "torch")
    batch = make_batch([Document(d.tolist()) for d in docs], sum(LENGTHS), pad_id=0)
    packed.zero_grad()
    logits = packed(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    torch.nn.functional.cross_entropy(logits[:-1], batch["labels"][0, 1:], reduction="sum").backward()
    eager.zero_grad()
    for d in docs:
        doc_logits = eager(input_ids=d[None]).logits[0]
        torch.nn.functional.cross_entropy(doc_logits[:-1], d[1:], reduction="sum").backward()
    for (name, p), q in zip(packed.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
