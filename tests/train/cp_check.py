"""Run under `torchrun --nproc-per-node N` (CPU, gloo): context-parallel results against the unsplit computation.

    torchrun --standalone --nproc-per-node 2 tests/train/cp_check.py attention
    torchrun --standalone --nproc-per-node 2 tests/train/cp_check.py step [--fsdp-only]

`attention`: every rank's output rows and dq/dk/dv of `CPShard.attention` on its share of a packed row equal the
float64 dense-mask reference (`cwm_kernels.reference`) over the whole row, for rows of many short documents, one
document longer than a rank's share, windows smaller and larger than a share, GQA, balanced and forced cuts.
`step`: a 4-layer CwmForCausalLM (sliding and full layers, GQA) in float64: the loss and every parameter's
gradient after one backward, split over the ranks, equal the same model's unsplit loss and gradients computed by
each rank alone; once with gradients summed over the group by hand, once as the trainer runs it (FSDP2 over a
(dp 1, cp N) mesh through `cwm.model.parallelize`, activation checkpointing on, loss scaled by the world size). Prints one "ok ..." line per case from rank 0; any
mismatch raises (nonzero exit).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
import torch.distributed as dist

from cwm.model.context_parallel import CPShard, balance_cuts, shard_batch
from cwm_kernels.reference import packed_attention_reference

TOL = 1e-10  # float64 throughout; the split changes only summation order

# (name, document lengths): T = 92 or 96, so a rank's share is about 48 tokens at CP 2, 24 at CP 4.
ROWS = [
    ("many short docs", [3, 1, 5, 2, 7, 4, 6, 2, 9, 3, 5, 8, 1, 4, 6, 2, 7, 3, 5, 9]),
    ("one doc longer than a share", [5, 3, 70, 4, 9, 5]),
    ("one doc, the whole row", [96]),
    ("long doc first", [60, 2, 2, 30, 2]),
]
WINDOWS = [None, 4, 40, 200]  # full; smaller than a share; larger than a share at CP 4 (24) and 2 (48) ...


def cu_of(lengths):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return cu


def check_attention(rank: int, world: int) -> None:
    heads_q, heads_kv, dim = 4, 2, 8
    for name, lengths in ROWS:
        cu = cu_of(lengths)
        total = cu[-1]
        for window in WINDOWS:
            for how in ("balanced", "equal tokens"):
                cuts = (balance_cuts(cu, world, [window]) if how == "balanced"
                        else [round(r * total / world) for r in range(world + 1)])
                gen = torch.Generator().manual_seed(len(cu) * 1000 + (window or 0))
                q, k, v, grad_out = (torch.randn(total, h, dim, generator=gen, dtype=torch.float64)
                                     for h in (heads_q, heads_kv, heads_kv, heads_q))
                ref_in = [x.clone().requires_grad_() for x in (q, k, v)]
                ref = packed_attention_reference(*ref_in, torch.tensor(cu, dtype=torch.int32), window)
                (ref * grad_out).sum().backward()
                shard = CPShard(cu, cuts, rank, None)
                s, e = shard.start, shard.end
                local = [x[s:e].clone().requires_grad_() for x in (q, k, v)]
                out = shard.attention(*local, window, None, backend="torch")
                (out * grad_out[s:e]).sum().backward()
                for label, got, want in [("out", out, ref), *[(f"d{n}", a.grad, b.grad) for n, a, b in zip("qkv", local, ref_in)]]:
                    err = (got - want[s:e]).abs().max().item()
                    if not err <= TOL:
                        raise AssertionError(f"rank {rank}/{world} {name}, window {window}, {how} cuts {cuts}: "
                                             f"{label} differs by {err:.3e}")
                if rank == 0:
                    rows = sum(CPShard(cu, cuts, r).exchanged_rows([window]) for r in range(world))
                    print(f"ok attention cp={world} | {name} | window {window} | {how} cuts {cuts} | "
                          f"KV rows exchanged {rows}", flush=True)


def tiny_model(window: int):
    from transformers import CwmConfig, CwmForCausalLM

    from cwm.model.attention import register

    register()
    config = CwmConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, sliding_window=window, vocab_size=64,
                       max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                       layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                       rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = CwmForCausalLM._from_config(config, attn_implementation="cwm_packed").double()
    # Random (not zero) weights everywhere, so no gradient is trivially equal.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def row_batch(lengths, vocab: int, seed: int) -> dict:
    cu = cu_of(lengths)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (1, cu[-1]), generator=gen)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    labels = ids.clone()
    labels[0, torch.tensor(cu[:-1])] = -100  # no loss on a document's first token (nothing predicts it)
    labels[0, torch.rand(cu[-1], generator=gen) < 0.2] = -100  # some masked observations
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32), "max_seqlen": max(lengths)}


def check_step(rank: int, world: int) -> None:
    from cwm.model.context_parallel import layer_windows

    variants = (True,) if "--fsdp-only" in sys.argv else (False, True)
    cases = [(window, name, lengths, fsdp) for fsdp in variants for window in (4, 40) for name, lengths in ROWS]
    for window, name, lengths, fsdp in cases:  # windows smaller / larger than a share
        model = tiny_model(window)
        batch = row_batch(lengths, model.config.vocab_size, seed=len(lengths))
        targets = batch["labels"][0, 1:]
        n_loss = int((targets != -100).sum())
        # Unsplit: the trainer's convention (logits at j predict labels at j + 1), summed over loss tokens.
        cu = batch["cu_seqlens"]
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], cu_seq_lens_q=cu,
                       cu_seq_lens_k=cu, max_length_q=batch["max_seqlen"], max_length_k=batch["max_seqlen"]).logits
        ref_loss = torch.nn.functional.cross_entropy(logits[0, :-1], targets, ignore_index=-100, reduction="sum") / n_loss
        ref_loss.backward()
        ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        # Split: this rank's tokens and next-token targets; gradients summed over the group.
        local, shard = shard_batch(batch, world, rank, layer_windows(model.config))
        if fsdp:  # as the trainer: FSDP2 over the CP ranks averages gradients, so the loss is scaled by world
            from torch.distributed.device_mesh import init_device_mesh

            from cwm.model.parallelize import parallelize

            mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("dp", "cp"))
            model = parallelize(model, mesh, bf16=False, activation_checkpointing=True, compile=False)
            shard.group = mesh.get_group("cp")
        logits = model(input_ids=local["input_ids"], position_ids=local["position_ids"], cp_shard=shard).logits
        loss = torch.nn.functional.cross_entropy(logits[0], local["targets"][0], ignore_index=-100, reduction="sum") / n_loss
        (loss * world if fsdp else loss).backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        worst, where = 0.0, ""
        for n, p in model.named_parameters():
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            if fsdp:
                grad = grad.full_tensor()
            else:
                dist.all_reduce(grad)
            err = (grad - ref_grads[n]).abs().max().item()
            if err > worst:
                worst, where = err, n
            if not err <= TOL * max(1.0, ref_grads[n].abs().max().item()):
                raise AssertionError(f"rank {rank}/{world} step {name}, window {window}: grad {n} differs by {err:.3e}")
        loss_err = abs(total.item() - ref_loss.item())
        if not loss_err <= TOL:
            raise AssertionError(f"rank {rank}/{world} step {name}, window {window}: loss {total.item()!r} vs "
                                 f"{ref_loss.item()!r}")
        if rank == 0:
            print(f"ok step cp={world}{' fsdp2+ac' if fsdp else ''} | {name} | window {window} | cuts {shard.cuts} | loss {ref_loss.item():.6f} "
                  f"(|diff| {loss_err:.1e}) | {sum(1 for _ in model.parameters())} grads, max |diff| {worst:.1e} ({where})",
                  flush=True)


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        {"attention": check_attention, "step": check_step}[sys.argv[1]](rank, world)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
