"""One GRPO learner step over a batch of trajectories: filter, compute advantages, micro-batch, backpropagate.

Kept apart from the CLI so the loss path can be tested on a plain model and driven by any loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from cwm.model.loss import DEFAULT_CHUNK, HeadRequest, head_request, shifted_targets
from cwm.rl.grpo import GRPOConfig, group_advantages, grpo_loss
from cwm.rl.rollout import Trajectory


@dataclass
class TrainBatch:
    trajectories: list[Trajectory]   # kept: in a group with signal, fresh enough
    advantages: list[float]
    skipped_groups: int


def select(trajs: list[Trajectory], cfg: GRPOConfig) -> TrainBatch:
    """Advantages per group; groups whose advantages are all zero are skipped (when the switch is on)."""
    if not trajs:
        return TrainBatch([], [], 0)
    adv = group_advantages(torch.tensor([t.reward for t in trajs]), torch.tensor([t.group for t in trajs]),
                           cfg.std_normalize)
    by_group: dict[int, list[int]] = {}
    for i, t in enumerate(trajs):
        by_group.setdefault(t.group, []).append(i)
    keep, skipped = [], 0
    for members in by_group.values():
        if cfg.skip_zero_advantage and all(adv[i] == 0 for i in members):
            skipped += 1
        else:
            keep += members
    return TrainBatch([trajs[i] for i in keep], [float(adv[i]) for i in keep], skipped)


def collate(trajs: list[Trajectory], advantages: list[float], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; everything per token is aligned to the *target* (token j+1 predicted at j)."""
    width = max(len(t.tokens) for t in trajs)
    b = len(trajs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.float32)
    old = torch.zeros((b, width), dtype=torch.float32)
    for i, t in enumerate(trajs):
        n = len(t.tokens)
        ids[i, :n] = torch.tensor(t.tokens)
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(t.mask, dtype=torch.float32)
        old[i, :n] = torch.tensor(t.logprobs, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": attn, "mask": mask[:, 1:], "old_logprobs": old[:, 1:],
            "advantages": torch.tensor(advantages, dtype=torch.float32)}


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token under `model` at the sampling temperature, and the policy's entropy there.

    [B, S-1] each, aligned to the target (token j+1 predicted at j). The model's head computes them chunk by
    chunk (`cwm.model.loss`): no [B, S, vocabulary] logits are held, and only the log-probs carry a gradient.
    """
    targets = shifted_targets(input_ids)
    with head_request(model, HeadRequest("logprobs", targets, chunk_size=chunk_size, temperature=temperature)) as req:
        logp = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return logp[:, :-1], req.results["entropy"][:, :-1]


def micro_batches(n: int, lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped (longest first) so that each padded micro-batch holds at most `max_tokens` tokens."""
    order = sorted(range(n), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        if current and lengths[current[0]] * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def backward_batch(model: torch.nn.Module, batch: TrainBatch, cfg: GRPOConfig, *, pad_id: int,
                   temperature: float, micro_batch_tokens: int,
                   ref_model: torch.nn.Module | None = None) -> dict[str, float]:
    """Accumulate the GRPO gradient of `batch` into `model`'s .grad; returns summed statistics.

    Under torch.distributed every rank runs the same number of forward/backward passes (FSDP2 collectives
    must line up): a rank with fewer micro-batches runs empty ones (a pad token, zero loss).
    """
    trajs, device = batch.trajectories, next(model.parameters()).device
    groups = micro_batches(len(trajs), [len(t.tokens) for t in trajs], micro_batch_tokens) if trajs else []
    n_micro = len(groups)
    if dist.is_initialized():
        count = torch.tensor([n_micro], device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        n_micro = int(count)
    totals = {"loss": 0.0, "tokens": 0.0, "clipped_tokens": 0.0, "ratio_sum": 0.0, "entropy_sum": 0.0}
    for k in range(n_micro):
        if k < len(groups):
            mb = collate([trajs[i] for i in groups[k]], [batch.advantages[i] for i in groups[k]], pad_id)
        else:
            mb = _empty_micro_batch(pad_id)
        mb = {key: v.to(device) for key, v in mb.items()}
        logp, entropy = token_logprobs(model, mb["input_ids"], mb["attention_mask"], temperature)
        ref = None
        if cfg.kl_coef > 0 and ref_model is not None:
            with torch.no_grad():
                ref, _ = token_logprobs(ref_model, mb["input_ids"], mb["attention_mask"], temperature)
        loss, stats = grpo_loss(logp, mb["old_logprobs"], mb["advantages"], mb["mask"], cfg, ref)
        loss.backward()
        totals["loss"] += loss.item()
        for key in ("tokens", "clipped_tokens", "ratio_sum"):
            totals[key] += stats[key]
        totals["entropy_sum"] += float((entropy * mb["mask"]).sum())
    return totals


def _empty_micro_batch(pad_id: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.full((1, 2), pad_id, dtype=torch.long),
            "attention_mask": torch.ones((1, 2), dtype=torch.long), "mask": torch.zeros((1, 1)),
            "old_logprobs": torch.zeros((1, 1)), "advantages": torch.zeros(1)}

