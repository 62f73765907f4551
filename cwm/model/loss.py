"""Linear + cross-entropy without ever holding `[tokens, vocabulary]` logits: chunk by chunk over tokens.

A 131,072-token row against a 128,256-token vocabulary is 67 GB of fp32 logits, and autograd keeps them (and
their softmax, and its gradient). Here the output projection and the loss are one autograd function: forward
computes `chunk_size` rows of logits at a time, keeps only what each row needs (its log-sum-exp), and frees the
chunk; backward recomputes a chunk's logits to form its softmax gradient. Peak memory is O(chunk_size × V)
instead of O(T × V); the result is the same function (float64-checked in tests/train/test_loss.py).

Two variants, one per use:

* `linear_cross_entropy(..., reduction="sum")` (the mid-training loss): the upstream gradient of a sum is one
  scalar, so the gradients of hidden states and weight are formed in forward, chunk by chunk, while the chunk's
  logits are at hand (as Liger-Kernel's fused linear cross-entropy does); backward only scales them. Three
  matmuls over the logits in all, like the plain computation.
* `linear_cross_entropy(..., reduction="none")` and `linear_logprobs` (RL: the GRPO loss is not linear in the
  log-probabilities): per-token outputs with any upstream gradient; backward recomputes each chunk (four matmuls).

`ChunkedLMHead` puts this inside a Hugging Face causal LM: the model's own `lm_head` (same module, same
`weight` parameter, so state dicts and FSDP units are unchanged) computes the loss or the log-probabilities
in place of logits while a request is set with `head_request`, and plain logits otherwise (generation, eval).
Computing inside the model's forward matters under FSDP2: the head's weight is gathered exactly then.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
DEFAULT_CHUNK = 512  # tokens per chunk: 512 × 128k vocabulary = 256 MB of fp32 logits at a time


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's where it is on (the logits are formed and reduced in fp32 regardless)."""
    kind = hidden.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = (h @ weight.t()).float()
    return logits if bias is None else logits.add_(bias.float())


class _SummedLinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of CE(hidden @ weight.T, labels); gradients formed in forward (the upstream is a scalar)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size: int, ignore_index: int, grads: bool):
        n = hidden.shape[0]
        losses = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.zeros_like(hidden) if grads and ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if grads and ctx.needs_input_grad[1] else None
        for s in range(0, n, chunk_size):
            y = labels[s:s + chunk_size]
            valid = y != ignore_index
            if not bool(valid.any()):
                continue  # an all-ignored chunk contributes neither loss nor gradient
            h = hidden[s:s + chunk_size]
            target = y.clamp(min=0)
            # One [chunk, V] buffer, everything in place: logits -> exp(logits - max) -> softmax -> its gradient.
            logits = _chunk_logits(h, weight, None)
            target_logit = logits.gather(1, target[:, None])[:, 0]
            top = logits.amax(dim=-1)
            probs = logits.sub_(top[:, None]).exp_()
            total = probs.sum(dim=-1)
            losses[s:s + chunk_size] = torch.where(valid, top + total.log() - target_logit, 0.0)
            if grad_h is None and grad_w is None:
                continue
            # d loss / d logits = softmax - onehot(target), zero on ignored rows.
            probs.div_(total[:, None])
            probs[torch.arange(len(y), device=y.device), target] -= 1.0
            probs.mul_(valid[:, None])
            if grad_h is not None:
                grad_h[s:s + chunk_size] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_w is not None:
                grad_w.addmm_(probs.t(), h.float()) if weight.dtype == torch.float32 else \
                    grad_w.add_((probs.to(h.dtype).t() @ h).float())
            del logits, probs
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype, ctx.used = weight.dtype, False
        ctx.mark_non_differentiable(losses)
        return losses.sum(), losses

    @staticmethod
    def backward(ctx, grad_sum, _grad_losses):
        if ctx.used:
            raise RuntimeError("linear_cross_entropy (sum): backward runs once per forward (its gradients are "
                               "scaled in place); call the loss again instead of retain_graph=True")
        ctx.used = True
        grad_h, grad_w = ctx.saved_tensors
        # Scaled in place: a [V, D] copy would be the largest allocation of the whole loss.
        gh = None if grad_h is None else grad_h.mul_(grad_sum.to(grad_h.dtype))
        gw = None if grad_w is None else grad_w.mul_(grad_sum).to(ctx.weight_dtype)
        return gh, gw, None, None, None, None


class _TokenLinearCrossEntropy(torch.autograd.Function):
    """Per-token CE (and, without gradient, the entropy of the softmax); backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size: int, ignore_index: int, want_entropy: bool):
        n = hidden.shape[0]
        losses = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        lse_all = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk_size):
            y = labels[s:s + chunk_size]
            valid = y != ignore_index
            if not bool(valid.any()) and not want_entropy:
                continue
            logits = _chunk_logits(hidden[s:s + chunk_size], weight, None)
            lse = torch.logsumexp(logits, dim=-1)
            lse_all[s:s + chunk_size] = lse
            target = y.clamp(min=0)
            losses[s:s + chunk_size] = torch.where(valid, lse - logits.gather(1, target[:, None])[:, 0], 0.0)
            if want_entropy:  # H = lse - sum p * logit
                entropy[s:s + chunk_size] = lse - (torch.softmax(logits, -1) * logits).sum(-1)
            del logits
        ctx.save_for_backward(hidden, weight, labels, lse_all)
        ctx.chunk_size, ctx.ignore_index = chunk_size, ignore_index
        ctx.mark_non_differentiable(entropy)
        return losses, entropy

    @staticmethod
    def backward(ctx, grad_losses, _grad_entropy):
        hidden, weight, labels, lse_all = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        if grad_losses is None:
            return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None, None
        c = ctx.chunk_size
        for s in range(0, hidden.shape[0], c):
            y = labels[s:s + c]
            g = grad_losses[s:s + c].float() * (y != ctx.ignore_index)
            if not bool(g.any()):
                continue
            h = hidden[s:s + c]
            probs = _chunk_logits(h, weight, None).sub_(lse_all[s:s + c, None]).exp_()
            target = y.clamp(min=0)
            probs[torch.arange(len(y), device=y.device), target] -= 1.0
            probs.mul_(g[:, None])
            if grad_h is not None:
                grad_h[s:s + c] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_w is not None:
                grad_w.add_((probs.to(h.dtype).t() @ h).float())
            del probs
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                         chunk_size: int = DEFAULT_CHUNK, ignore_index: int = IGNORE_INDEX,
                         reduction: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy of `hidden @ weight.T` ([N, D] @ [D, V]) against `labels` [N], never holding [N, V].

    Returns `(loss, token_losses)`: with reduction "sum" the summed loss (differentiable) and the per-token
    losses (detached, for statistics); with "none" the per-token losses (differentiable) twice. Ignored labels
    give loss 0 and no gradient. Under autocast the matmuls run in autocast's dtype; logits are fp32.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] or labels.shape != hidden.shape[:1]:
        raise ValueError(f"linear_cross_entropy: hidden [N, D], weight [V, D], labels [N]; got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(labels.shape)}")
    if chunk_size < 1:
        raise ValueError(f"linear_cross_entropy: chunk_size must be >= 1, got {chunk_size}")
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = hidden.to(dtype), weight.to(dtype)
        if reduction == "sum":
            grads = torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)  # none to form under no_grad
            return _SummedLinearCrossEntropy.apply(h, w, labels, chunk_size, ignore_index, grads)
        if reduction == "none":
            losses, _ = _TokenLinearCrossEntropy.apply(h, w, labels, chunk_size, ignore_index, False)
            return losses, losses
    raise ValueError(f"linear_cross_entropy: reduction must be 'sum' or 'none', got {reduction!r}")


def linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                    chunk_size: int = DEFAULT_CHUNK,
                    ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) under softmax(hidden @ weight.T / temperature), differentiable, and the softmax's entropy
    (no gradient); both [N] fp32, 0 log-prob where the target is ignored."""
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = (hidden / temperature).to(dtype), weight.to(dtype)
        losses, entropy = _TokenLinearCrossEntropy.apply(h, w, targets, chunk_size, ignore_index, True)
    return -losses, entropy


@torch.no_grad()
def linear_argmax(hidden: torch.Tensor, weight: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """argmax over the vocabulary of `hidden @ weight.T`, [N] int64, one chunk of logits at a time."""
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = hidden.to(dtype), weight.to(dtype)
        return torch.cat([_chunk_logits(h[s:s + chunk_size], w, None).argmax(-1)
                          for s in range(0, h.shape[0], chunk_size)]) if h.shape[0] else \
            torch.zeros(0, dtype=torch.long, device=h.device)


# -- inside a Hugging Face causal LM -----------------------------------------------------------------------------
@dataclass
class HeadRequest:
    """What the head computes instead of logits; its results are left here for the caller."""
    kind: str                      # "loss_sum" | "logprobs" | "argmax"
    targets: torch.Tensor | None   # [B, S]: the target of each position (shifted by the caller), -100 for none
    chunk_size: int = DEFAULT_CHUNK
    temperature: float = 1.0
    results: dict = field(default_factory=dict)


class ChunkedLMHead(nn.Linear):
    """A causal LM's `lm_head` that, while a `HeadRequest` is set, returns a loss or log-probabilities instead
    of logits. Installed by changing the class of the existing `nn.Linear` (see `install`): the module, its
    parameter and everything holding them stay the same objects."""

    cwm_request: HeadRequest | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        req = self.cwm_request
        if req is None:
            return F.linear(hidden, self.weight, self.bias)
        if self.bias is not None:
            raise ValueError("ChunkedLMHead: an output projection with a bias is not supported")
        flat = hidden.reshape(-1, hidden.shape[-1])
        if req.kind == "argmax":  # greedy next tokens (teacher-forced evaluation), chunk by chunk
            return linear_argmax(flat, self.weight, chunk_size=req.chunk_size).view(hidden.shape[:-1])
        targets = req.targets.reshape(-1).to(hidden.device)
        if req.kind == "loss_sum":
            loss, token_losses = linear_cross_entropy(flat, self.weight, targets, chunk_size=req.chunk_size)
            req.results["token_losses"] = token_losses.view(req.targets.shape)
            return loss
        if req.kind == "logprobs":
            logp, entropy = linear_logprobs(flat, self.weight, targets, temperature=req.temperature,
                                            chunk_size=req.chunk_size)
            req.results["entropy"] = entropy.view(req.targets.shape)
            return logp.view(req.targets.shape)
        raise ValueError(f"ChunkedLMHead: unknown request {req.kind!r}")


def install(model: nn.Module) -> ChunkedLMHead:
    """Make `model`'s output embedding a ChunkedLMHead (idempotent); call before `fully_shard`."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}: the output embedding is {type(head).__name__}, not a Linear; "
                         f"the chunked loss needs a plain output projection")
    if not isinstance(head, ChunkedLMHead):
        head.__class__ = ChunkedLMHead if type(head) is nn.Linear else type(
            f"Chunked{type(head).__name__}", (ChunkedLMHead, type(head)), {})
    return head


@contextlib.contextmanager
def head_request(model: nn.Module, request: HeadRequest):
    """Within the block, `model`'s forward returns `request`'s computation in `.logits` (results in `request`)."""
    head = install(model)
    head.cwm_request = request
    try:
        yield request
    finally:
        head.cwm_request = None


def shifted_targets(input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """[B, S] targets for positions 0..S-1: the next token's label (HF convention), -100 at the last position."""
    source = input_ids if labels is None else labels
    return F.pad(source[:, 1:], (0, 1), value=IGNORE_INDEX)
