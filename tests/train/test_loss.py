"""The chunked linear + cross-entropy (cwm.model.loss) against a float64 computation that holds every logit."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cwm.model.loss import HeadRequest, head_request, linear_cross_entropy, linear_logprobs, shifted_targets

N, D, V, CHUNK = 50, 24, 103, 8  # V is not a multiple of the chunk; N leaves a short last chunk


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g)
    weight = torch.randn(V, D, generator=g) * 0.5
    labels = torch.randint(0, V, (N,), generator=g)
    labels[3] = labels[17] = -100
    labels[CHUNK * 2:CHUNK * 3] = -100  # one chunk with no label at all
    return hidden, weight, labels


def _oracle(hidden, weight, labels, upstream):
    """float64, whole [N, V] logits: per-token losses and the gradients of sum(upstream * losses)."""
    h = hidden.double().requires_grad_()
    w = weight.double().requires_grad_()
    losses = F.cross_entropy(h @ w.t(), labels, ignore_index=-100, reduction="none")
    (losses * upstream.double()).sum().backward()
    return losses.detach(), h.grad, w.grad


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_loss_and_gradients_equal_the_full_computation(reduction):
    hidden, weight, labels = _case()
    upstream = torch.ones(N) if reduction == "sum" else torch.randn(N, generator=torch.Generator().manual_seed(5))
    ref_losses, ref_gh, ref_gw = _oracle(hidden, weight, labels, upstream)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, token_losses = linear_cross_entropy(h, w, labels, chunk_size=CHUNK, reduction=reduction)
    (loss * 3.0 if reduction == "sum" else (loss * upstream).sum() * 3.0).backward()
    torch.testing.assert_close(token_losses.double(), ref_losses, rtol=1e-5, atol=1e-5)
    assert token_losses[labels == -100].eq(0).all()
    torch.testing.assert_close(h.grad.double(), 3.0 * ref_gh, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), 3.0 * ref_gw, rtol=1e-4, atol=1e-5)
    assert h.grad[CHUNK * 2:CHUNK * 3].eq(0).all() and h.grad[3].eq(0).all()


def test_chunk_size_does_not_change_the_result():
    hidden, weight, labels = _case(1)
    results = []
    for chunk in (1, 7, CHUNK, N, 4 * N):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, _ = linear_cross_entropy(h, w, labels, chunk_size=chunk)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_logprobs_and_entropy_at_a_temperature():
    hidden, weight, labels = _case(2)
    temperature = 0.7
    upstream = torch.randn(N, generator=torch.Generator().manual_seed(3))
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    logp_all = torch.log_softmax(h64 @ w64.t() / temperature, -1)
    ref = logp_all.gather(1, labels.clamp(min=0)[:, None])[:, 0] * (labels != -100)
    ref_entropy = -(logp_all.exp() * logp_all).sum(-1)
    (ref * upstream.double()).sum().backward()
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, entropy = linear_logprobs(h, w, labels, temperature=temperature, chunk_size=CHUNK)
    (logp * upstream).sum().backward()
    torch.testing.assert_close(logp.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.double(), ref_entropy.detach(), rtol=1e-5, atol=1e-5)
    assert not entropy.requires_grad
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)


def test_no_gradients_are_formed_under_no_grad():
    hidden, weight, labels = _case(3)
    with torch.no_grad():
        loss, token_losses = linear_cross_entropy(hidden.requires_grad_(), weight, labels, chunk_size=CHUNK)
    assert not loss.requires_grad
    torch.testing.assert_close(token_losses.double(), _oracle(hidden.detach(), weight, labels, torch.ones(N))[0],
                               rtol=1e-5, atol=1e-5)


def test_inside_a_hugging_face_model_the_head_returns_the_loss_not_logits():
    """The head request gives the same loss and gradients as HF's own logits + cross entropy."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 97, (2, 13))
    labels = ids.clone()
    labels[0, :4] = -100
    ref = model(input_ids=ids, labels=labels).loss  # mean over the tokens with a label
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    targets = shifted_targets(ids, labels)
    with head_request(model, HeadRequest("loss_sum", targets, chunk_size=5)) as req:
        total = model(input_ids=ids).logits
    (total / (targets != -100).sum()).backward()
    torch.testing.assert_close(total / (targets != -100).sum(), ref, rtol=1e-5, atol=1e-6)
    assert req.results["token_losses"].shape == ids.shape
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert model(input_ids=ids).logits.shape == (2, 13, 97)  # without a request: plain logits again


def test_argmax_request_gives_the_greedy_tokens_of_full_logits():
    """For teacher-forced evaluation (the in-training next-state eval) without [T, V] logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()
    ids = torch.randint(0, 97, (1, 30))
    with torch.no_grad():
        want = model(input_ids=ids).logits.argmax(-1)
        with head_request(model, HeadRequest("argmax", None, chunk_size=7)):
            got = model(input_ids=ids).logits
    assert torch.equal(got, want)


def test_rl_learner_logprobs_and_entropy_equal_full_logits():
    from transformers import LlamaConfig, LlamaForCausalLM

    from cwm.rl.learner import token_logprobs

    torch.manual_seed(2)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8))
    ids = torch.randint(0, 97, (2, 15))
    attention = torch.ones_like(ids)
    attention[1, 11:] = 0
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].double() / 0.8
    logp_all = torch.log_softmax(logits, -1)
    want = logp_all.gather(-1, ids[:, 1:, None])[..., 0]
    want_entropy = -(logp_all.exp() * logp_all).sum(-1)
    up = torch.randn(want.shape)
    (want * up).sum().backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logp, entropy = token_logprobs(model, ids, attention, temperature=0.8, chunk_size=4)
    (logp * up).sum().backward()
    torch.testing.assert_close(logp.double(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.double(), want_entropy.detach(), rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[n].float(), rtol=1e-4, atol=1e-5, msg=n)
